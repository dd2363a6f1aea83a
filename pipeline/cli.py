"""The ``labbot`` command line for the pipeline: ``check`` (and later ``generate``, ``build``).

This module and :mod:`bot.cli` are the only places that read the environment or the terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline import discover, report
from pipeline.config import RepoConfig, find_config, load_config
from pipeline.errors import ConfigError, PipelineError, UsageError
from pipeline.findings import FileResult
from pipeline.validate import PROFILES, validate_path

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def add_check_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="validate qna.yaml files",
        description="Validate taxonomy qna.yaml files and report every problem with its "
        "file:line:column and how to fix it. Exit 0 when all are valid, 1 when any has an "
        "error, 2 on usage errors.",
    )
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="files or folders (default: the "
        "taxonomy root from .github/labbot.yml, else taxonomy/ or .)",
    )
    p.add_argument(
        "--changed",
        action="store_true",
        help="check qna.yaml files added or modified since the merge base with "
        "--base, untracked files included",
    )
    p.add_argument(
        "--base", metavar="REF", help="base for --changed (default origin/main, else main)"
    )
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="pr: strict rules for new or changed files (default); tree: an "
        "existing tree, legacy skill versions allowed",
    )
    p.add_argument("--format", choices=report.FORMATS, default="text", dest="fmt")
    p.add_argument(
        "--files-from",
        metavar="FILE",
        help="read paths, one per line, from FILE (- for standard input)",
    )
    p.add_argument(
        "--fetch-documents",
        action="store_true",
        help="clone each knowledge document repository at its commit and check "
        "that the patterns match .md or .pdf files",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="repository config (default: the nearest .github/labbot.yml)",
    )
    p.add_argument(
        "--no-attribution", action="store_true", help="do not look for attribution.txt files"
    )
    p.set_defaults(func=run_check)


def _config(args: argparse.Namespace, start: Path) -> RepoConfig:
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise UsageError(f"--config {args.config}: no such file")
        return load_config(path)
    found = find_config(start)
    return load_config(found) if found else RepoConfig()


def _default_root(config: RepoConfig) -> str:
    if config.taxonomy_root:
        root = config.resolve(config.taxonomy_root)
        try:
            return str(root.relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(root)
    return "taxonomy" if os.path.isdir("taxonomy") else "."


def run_check(args: argparse.Namespace) -> int:
    paths: list[str] = list(args.paths)
    if args.files_from:
        paths.extend(discover.read_list(args.files_from, sys.stdin))
    start = Path(paths[0]) if paths else Path.cwd()
    if not start.exists():
        start = Path.cwd()
    config = _config(args, start)
    if args.changed:
        paths.extend(discover.changed(start if start.is_dir() else start.parent, args.base))
        if not paths:
            sys.stdout.write("no changed qna.yaml files\n" if args.fmt == "text" else "")
            if args.fmt == "json":
                sys.stdout.write(report.render_json([]))
            return EXIT_OK
    elif not paths and not args.files_from:
        paths = [_default_root(config)]
    files = discover.expand(paths)
    profile = PROFILES[args.profile or config.profile]
    results: list[FileResult] = [
        validate_path(p, profile, config, check_attribution=not args.no_attribution) for p in files
    ]
    if args.fetch_documents:
        from pipeline.documents import check_documents

        cache = Path(os.environ.get("LABBOT_CACHE_DIR", Path.home() / ".cache" / "labbot"))
        check_documents(results, config, cache / "documents")
    colour = args.fmt == "text" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    sys.stdout.write(report.render(results, args.fmt, colour))
    return EXIT_OK if all(r.valid for r in results) else EXIT_INVALID


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labbot",
        description="labbot: validate, preview and build LAB-method taxonomies.",
    )
    parser.add_argument("--version", action="version", version="labbot 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_check_parser(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; map pipeline errors to exit status 2."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        sys.stderr.write(f"labbot: {exc}\n")
        return EXIT_USAGE
    except PipelineError as exc:
        sys.stderr.write(f"labbot: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("labbot: interrupted\n")
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)
