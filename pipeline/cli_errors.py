"""How the command line tells an error: the words, the flag that helps, the exit status.

Errors carry context (:mod:`pipeline.errors`); their messages never name a flag, because the
same errors reach pull request comments and the App's log. Here the CLI adds the flags.
"""

from __future__ import annotations

from typing import TextIO

from pipeline.errors import (
    BuildError,
    DocumentError,
    ExitCode,
    LabbotError,
    RunDirectoryInUse,
    UsageError,
    exit_code_for,
)

#: The flag of each parameter a :class:`UsageError` may name in ``setting``.
FLAGS = {
    "base": "--base",
    "changed": "--changed",
    "concurrency": "--concurrency",
    "config": "--config",
    "context_window": "--context-window",
    "files_from": "--files-from",
    "out": "--out",
    "resume": "--resume",
    "samples": "--samples",
    "teacher": "--teacher",
}

#: Advice for each kind of teacher failure (``TeacherError.problem``).
TEACHER_HINTS = {
    "unreachable": "start the server, or pass --teacher embedded",
    "overloaded": "lower --concurrency if the server is overloaded",
    "refused": "check --teacher and the model the server serves",
    "credentials": "set LABBOT_TEACHER_API_KEY (or OPENAI_API_KEY) to the server's key",
    "not-openai": "--teacher takes the base URL of an OpenAI-compatible API, usually ending /v1",
}


def describe(exc: LabbotError) -> str:
    """The lines the CLI prints for ``exc`` (without the ``labbot:`` prefix), hint included."""
    from pipeline.sdg.teacher.types import TeacherError

    text = str(exc)
    hint = ""
    if isinstance(exc, UsageError) and exc.setting in FLAGS:
        text = f"{FLAGS[exc.setting]}: {text}"
    elif isinstance(exc, TeacherError):
        hint = TEACHER_HINTS.get(exc.problem, "")
    elif isinstance(exc, DocumentError) and exc.repo:
        where = f"{exc.repo} at {exc.commit[:12]}" if exc.commit else exc.repo
        text = f"document repository {where}: {text}"
    elif isinstance(exc, RunDirectoryInUse):
        hint = "pass --resume to continue that run, or another --out"
    return text + (f"\n  hint: {hint}" if hint else "")


def report(exc: LabbotError, stream: TextIO, prefix: str = "") -> ExitCode:
    """Print ``exc`` for the terminal (findings first, when it carries them) and return its
    exit status from the one table, :class:`pipeline.errors.ExitCode`."""
    if isinstance(exc, BuildError) and exc.results:
        from pipeline.taxonomy import report as findings_report

        stream.write(findings_report.render_text(exc.results))
    stream.write(f"labbot: {prefix}{describe(exc)}\n")
    return exit_code_for(exc)
