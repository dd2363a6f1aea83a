"""The pipeline's exception tree.

PipelineError
 ├── ConfigError        a configuration file or option is invalid (carries located findings)
 ├── UsageError         the command line asks for something impossible (exit status 2)
 └── DocumentError      a knowledge document could not be retrieved

Validation never raises for bad *input files*: every problem with a ``qna.yaml`` is a
:class:`pipeline.taxonomy.findings.Finding`. Exceptions are for problems with the run itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.taxonomy.findings import Finding


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""


class UsageError(PipelineError):
    """The command line or an API call asks for something that cannot be done."""


class ConfigError(PipelineError):
    """A configuration file is invalid; ``findings`` says where and why."""

    def __init__(self, path: str, findings: list[Finding]) -> None:
        self.path = path
        self.findings = findings
        lines = [f"{path}:{f.line}:{f.column}: {f.message}" for f in findings]
        super().__init__("invalid configuration:\n" + "\n".join(lines))


class DocumentError(PipelineError):
    """A knowledge document repository could not be cloned or read."""
