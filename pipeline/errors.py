"""labbot's exception tree and the exit status each branch of it means.

LabbotError                          exit status (``exit_code``)
 ├── PipelineError                   2 unless a subclass says otherwise
 │    ├── UsageError                 2  the command line or an API call asks for the impossible
 │    ├── ConfigError                2  a configuration file is invalid (located findings)
 │    ├── EmbeddedModelMissing       2  (pipeline.embedded) the installation lacks the model
 │    ├── ServiceError               3  a service labbot depends on failed
 │    │    ├── TeacherError             (pipeline.sdg.teacher) ``base_url``, ``status``
 │    │    └── DocumentError            a document repository: ``repo``, ``commit``
 │    └── BuildError                 4  a build stage cannot run;
 │         │                            1 when it carries the findings that stopped it
 │         ├── RunDirectoryInUse     2  a fresh build into a folder that holds a run
 │         ├── ChatTemplateError        (pipeline.training.packing)
 │         └── RankFailed               (pipeline.training.distributed)
 └── BotError                        (bot.errors) the App's errors; SettingsError exits 2

Errors carry their context as attributes; their messages say what happened in plain words and
never name a command-line flag. The CLI (:mod:`pipeline.cli`, :mod:`bot.cli`) and the App's
renderers choose how to tell it, and the CLI adds the flag that helps.

Validation never raises for bad *input files*: every problem with a ``qna.yaml`` is a
:class:`pipeline.taxonomy.findings.Finding`. Exceptions are for problems with the run itself.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.taxonomy.findings import FileResult, Finding


class ExitCode(IntEnum):
    """The one table of exit statuses for ``labbot check``, ``generate``, ``build`` and ``serve``.

    The split follows who has to act: 1 the contributor (fix the files), 2 whoever ran the
    command (fix the command line, the config or the installation), 3 whoever runs the teacher
    or hosts the documents (retrying later may work, so automation can tell it apart), 4 the
    build itself (look at the log). 130 is the shell's convention for Ctrl-C (128 + SIGINT).
    """

    OK = 0
    FINDINGS = 1
    USAGE = 2
    SERVICE = 3
    BUILD = 4
    INTERRUPTED = 130


class LabbotError(Exception):
    """Base class of every error labbot raises on purpose (pipeline and App alike)."""

    exit_code: ExitCode = ExitCode.USAGE


class PipelineError(LabbotError):
    """Base class of every error the pipeline raises on purpose."""


class UsageError(PipelineError):
    """The command line or an API call asks for something that cannot be done.

    ``setting`` names the parameter at fault (``concurrency``, ``files_from``...) so that the
    CLI can name its own flag for it; the message itself speaks of the thing, not the flag.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class ConfigError(PipelineError):
    """A configuration file is invalid; ``path`` and ``findings`` (with lines) say where."""

    def __init__(self, path: str, findings: list[Finding]) -> None:
        self.path = path
        self.findings = findings
        lines = [f"{path}:{f.line}:{f.column}: {f.message}" for f in findings]
        super().__init__("invalid configuration:\n" + "\n".join(lines))


class ServiceError(PipelineError):
    """A service labbot depends on (the teacher, a document host) failed or refused."""

    exit_code = ExitCode.SERVICE


class DocumentError(ServiceError):
    """A knowledge document repository could not be cloned or read.

    ``repo`` and ``commit`` name the document when the caller knows them (credentials never
    appear: repository URLs are checked against the allowed hosts before any fetch).
    """

    def __init__(self, message: str, *, repo: str | None = None, commit: str | None = None) -> None:
        super().__init__(message)
        self.repo = repo
        self.commit = commit


class BuildError(PipelineError):
    """A build stage cannot run; the message says why. ``results`` holds the validation
    results that stopped it, when invalid files did (then it exits as findings do)."""

    exit_code = ExitCode.BUILD

    def __init__(self, message: str, results: list[FileResult] | None = None) -> None:
        super().__init__(message)
        self.results = results or []
        if self.results:
            self.exit_code = ExitCode.FINDINGS


class RunDirectoryInUse(BuildError):
    """A fresh build was asked to write into ``run_dir``, which already holds a run."""

    exit_code = ExitCode.USAGE

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"{run_dir} is not empty: resume the run in it, or choose another")
        self.run_dir = run_dir


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit status for ``exc``, from the table in :class:`ExitCode`."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, LabbotError):
        return exc.exit_code
    raise TypeError(f"{type(exc).__name__} is not a labbot error") from exc
