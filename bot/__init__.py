"""labbot's GitHub App: webhook server, job queue and pull-request feedback."""

__version__ = "0.1.0"
