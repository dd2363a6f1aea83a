"""labbot's GitHub App: webhook server, job queue and pull-request feedback."""

from pipeline import __version__

__all__ = ["__version__"]
