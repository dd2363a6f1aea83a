"""The ``labbot`` command line for the pipeline: ``check`` (and later ``generate``, ``build``).

This module and :mod:`bot.cli` are the only places that read the environment or the terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pipeline import __version__
from pipeline.cli_errors import report as report_error
from pipeline.config import RepoConfig, find_config, load_config
from pipeline.errors import ExitCode, LabbotError, UsageError
from pipeline.taxonomy import discover, report
from pipeline.taxonomy.findings import FileResult
from pipeline.taxonomy.validate import PROFILES, validate_path

if TYPE_CHECKING:
    from pipeline.training.config import BuildConfig

# The exit statuses come from one table, pipeline.errors.ExitCode (also in the README).
EXIT_OK, EXIT_INVALID, EXIT_USAGE = ExitCode.OK, ExitCode.FINDINGS, ExitCode.USAGE


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
    p.add_argument(
        "--overlap",
        action="store_true",
        help="also report leaves that repeat other leaves of the tree (overlap.leaf, "
        "overlap.seed, overlap.within; warnings unless the config's overlap.as_errors)",
    )
    p.add_argument(
        "--semantic",
        action="store_true",
        help="with --overlap: also find seeds that repeat others in different words, by "
        "sentence embeddings (needs the extra: pip install 'labbot[semantic]')",
    )
    p.add_argument(
        "--tree",
        metavar="DIR",
        help="taxonomy tree to compare with for --overlap (default: the tree the checked "
        "files are in)",
    )
    p.set_defaults(func=run_check)


def _config(args: argparse.Namespace, start: Path) -> RepoConfig:
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise UsageError(f"{args.config}: no such file", setting="config")
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
        from pipeline.taxonomy.documents import check_documents

        cache = Path(os.environ.get("LABBOT_CACHE_DIR", Path.home() / ".cache" / "labbot"))
        check_documents(results, config, cache / "documents")
    if args.semantic and not args.overlap:
        raise UsageError("--semantic is a pass of --overlap: add --overlap", setting="semantic")
    if args.overlap:
        _check_overlap(args, results, files, config)
    colour = args.fmt == "text" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    sys.stdout.write(report.render(results, args.fmt, colour))
    return EXIT_OK if all(r.valid for r in results) else EXIT_INVALID


def _check_overlap(
    args: argparse.Namespace, results: list[FileResult], files: list[str], config: RepoConfig
) -> None:
    """Add overlap findings against the tree (``--tree``, else the config's taxonomy root,
    else the tree the first checked file is in), from the cached index when there is one."""
    from pipeline.taxonomy.overlap_tree import (
        check_results,
        load_tree_index,
        settings_from,
        taxonomy_root_of,
    )

    if args.tree:
        root = Path(args.tree)
        if not root.is_dir():
            raise UsageError(f"--tree {args.tree}: no such folder")
    elif config.taxonomy_root:
        root = config.resolve(config.taxonomy_root)
    else:
        found = next((r for f in files if (r := taxonomy_root_of(f)) is not None), None)
        root = found if found is not None else Path(_default_root(config))
    cache = Path(os.environ.get("LABBOT_CACHE_DIR", Path.home() / ".cache" / "labbot"))
    from pipeline import semantic

    meaning = bool(args.semantic)
    if meaning:  # before the index: a missing extra fails fast, with the install hint
        semantic.require()  # SemanticUnavailable (exit 2): what is missing, how to install it
    elif config.overlap.semantic:  # the repository's switch: never breaks a local check
        try:
            semantic.require()
            meaning = True
        except semantic.SemanticUnavailable as exc:
            sys.stderr.write(
                f"overlap: the config's overlap.semantic is on, but {exc.missing} is not "
                f"installed; lexical pass only (install: {semantic.INSTALL_HINT})\n"
            )
    tree = load_tree_index(root, cache / "overlap")
    extra = []
    if meaning:
        matcher, left = semantic.tree_matcher(
            tree.index, tree.root, cache / "semantic", config.overlap.semantic_threshold
        )
        extra.append(matcher)
    added = check_results(results, tree, settings_from(config.overlap), extra)
    how = "from the cache" if tree.source == "cache" else "built"
    sys.stderr.write(
        f"overlap: index of {len(tree.index):,} leaves {how} ({tree.key[:12]}, "
        f"{tree.updated} working-tree changes, {tree.seconds:.2f} s); {added} findings\n"
    )
    if meaning:
        sys.stderr.write(semantic.settings_note(matcher, left) + "\n")


def add_generate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "generate",
        help="generate synthetic training data from seed examples",
        description="Generate synthetic samples for taxonomy leaves with a teacher model, filter "
        "them with a critic, and write chat-format JSONL per leaf plus a summary. Unchanged leaves "
        "come from the cache.",
    )
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="qna.yaml files or folders (default: the whole taxonomy), and KEY=VALUE "
        "overrides of the generation defaults, e.g. generate.max_tokens=512 (keys: teacher*, "
        "seed, generate.* in pipeline/training/configs/default.yaml)",
    )
    p.add_argument(
        "--changed",
        action="store_true",
        help="only leaves changed since the merge "
        "base with --base (default origin/main, else main)",
    )
    p.add_argument("--base", metavar="REF")
    p.add_argument(
        "--teacher",
        default=None,
        metavar="URL|embedded",
        help="an OpenAI-compatible server (e.g. http://127.0.0.1:8000/v1) or "
        "'embedded' (SmolLM2-135M-Instruct in-process; default)",
    )
    p.add_argument(
        "--concurrency", type=int, default=None, help="requests in flight (HTTP; default 4)"
    )
    p.add_argument(
        "--context-window",
        type=int,
        default=None,
        help="the teacher's context size, when the server does not report it",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="N",
        help="candidate samples per leaf before filtering (default: generate.samples, 8)",
    )
    p.add_argument("--no-critic", action="store_true", help="skip the teacher's YES/NO critic")
    p.add_argument("--out", default="generated", metavar="DIR", help="output folder")
    p.add_argument("--no-cache", action="store_true", help="regenerate even unchanged leaves")
    p.add_argument("--config", metavar="FILE")
    p.set_defaults(func=run_generate)


def _taxonomy_root(config: RepoConfig) -> Path:
    if config.taxonomy_root:
        return config.resolve(config.taxonomy_root)
    return Path("taxonomy") if os.path.isdir("taxonomy") else Path(".")


class _Status:
    """Progress of generation: on a terminal, one line per leaf with its calls per stage,
    redrawn in place; elsewhere, a line when a leaf starts answering or comes from the cache."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.stages: dict[str, dict[str, int]] = {}
        self.cached: set[str] = set()
        self.last = 0.0
        self.drawn = 0

    def __call__(self, event: str, data: dict[str, object]) -> None:
        leaf = str(data.get("leaf", ""))
        first = leaf not in self.stages and leaf not in self.cached
        if event == "cached":
            self.cached.add(leaf)
        else:
            stages = data.get("stages")
            if isinstance(stages, dict):
                self.stages[leaf] = {str(k): int(v) for k, v in stages.items()}
        if not self.tty:
            if first:
                note = " (cached)" if event == "cached" else ""
                seen = len(self.stages) + len(self.cached)
                self.stream.write(f"[{seen}/{self.total}] {leaf}{note}\n")
                self.stream.flush()
            return
        now = time.monotonic()
        if now - self.last < 0.2 and not first:
            return
        self.last = now
        self._draw()

    def _draw(self) -> None:
        lines = []
        for leaf in sorted(set(self.stages) | self.cached):
            if leaf in self.cached:
                detail = "cached"
            else:
                detail = " ".join(f"{k} {v}" for k, v in self.stages[leaf].items())
            name = leaf.removesuffix("/qna.yaml")[-50:]
            lines.append(f"  {name:<50} {detail}"[:150].ljust(150))
        header = f"generating: {len(lines)}/{self.total} leaves started"
        out = "\x1b[F" * self.drawn + header.ljust(150) + "\n" + "".join(x + "\n" for x in lines)
        self.drawn = len(lines) + 1
        self.stream.write(out)
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self.drawn:
            self._draw()


def _select(args: argparse.Namespace, config: RepoConfig, root: Path) -> list[str] | None:
    paths: list[str] = list(args.paths)
    if args.changed:
        paths.extend(discover.changed(root if root.is_dir() else Path.cwd(), args.base))
        if not paths:
            return []
    return paths or None


def run_generate(args: argparse.Namespace) -> int:
    from pipeline.embedded import default_cache_dir
    from pipeline.errors import DocumentError
    from pipeline.sdg.generate import generate_leaves, write_outputs
    from pipeline.sdg.teacher import make_teacher
    from pipeline.taxonomy.documents import leaf_documents
    from pipeline.taxonomy.leaves import load_leaves

    args.paths, overrides = _split_overrides(args.paths)
    settings = _generate_settings(args, overrides)
    config = _config(args, Path.cwd())
    root = _taxonomy_root(config)
    selection = _select(args, config, root)
    if selection == []:
        sys.stdout.write("no changed leaves: nothing to generate\n")
        return EXIT_OK
    leaves, results = load_leaves(root, config, selection)
    invalid = [r for r in results if not r.valid]
    if invalid:
        sys.stderr.write(report.render_text(invalid))
        sys.stderr.write("labbot: fix the files above before generating\n")
        return EXIT_INVALID
    if settings.generate.samples < 1:
        raise UsageError("the samples per leaf must be at least 1", setting="samples")
    cache = default_cache_dir()
    cfg = settings.generate_config()
    teacher = make_teacher(
        settings.teacher,
        cache_dir=cache,
        concurrency=settings.teacher_concurrency,
        context_window=settings.teacher_context_window,
        api_key=_teacher_api_key(),
    )
    status = _Status(len(leaves), sys.stderr)
    started = time.monotonic()
    work: list[tuple[Any, list[str]]] = []
    for leaf in leaves:
        try:
            docs = leaf_documents(leaf, config, cache / "documents")
        except DocumentError as exc:
            teacher.close()
            return report_error(exc, sys.stderr, f"{leaf.path}: cannot read its documents: ")
        work.append((leaf, docs))
    try:
        done = generate_leaves(
            work, teacher, cfg, cache_dir=cache, use_cache=not args.no_cache, progress=status
        )
    except LabbotError:
        status.finish()
        raise
    finally:
        teacher.close()
    status.finish()
    summary = write_outputs(done, Path(args.out), teacher.identity)
    sys.stdout.write(_generate_table(summary, time.monotonic() - started))
    if summary["totals"]["generated"] and not summary["totals"]["kept"]:
        sys.stdout.write(
            "warning: the critic kept no sample. The teacher may be too weak for these prompts "
            "(see the rejection reasons in the *.samples.jsonl files); try a stronger teacher.\n"
        )
    return EXIT_OK


def _generate_table(summary: dict[str, Any], seconds: float) -> str:
    rows = [("leaf", "kind", "generated", "kept", "rejected (by filter)", "calls", "tokens")]
    for x in summary["leaves"]:
        rejected = ", ".join(f"{k} {v}" for k, v in x["rejected"].items()) or "-"
        tokens = x["prompt_tokens"] + x["completion_tokens"]
        rows.append(
            (
                x["leaf"].removesuffix("/qna.yaml"),
                x["kind"],
                str(x["generated"]),
                str(x["kept"]),
                rejected,
                "cached" if x["cached"] else str(x["teacher_calls"]),
                "-" if x["cached"] else str(tokens),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    t = summary["totals"]
    lines.append(
        f"\n{t['generated']} generated, {t['kept']} kept, {t['teacher_calls']} teacher calls, "
        f"{t['cached_leaves']} leaves from cache, {seconds:.1f} s; teacher {summary['teacher']}"
    )
    return "\n".join(lines) + "\n"


def _split_overrides(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Paths, and ``KEY=VALUE`` overrides (a word naming an existing file stays a path)."""
    from pipeline.training.config import is_override

    paths: list[str] = []
    overrides: list[str] = []
    for word in words:
        (overrides if is_override(word) and not os.path.exists(word) else paths).append(word)
    return paths, overrides


def _generate_settings(args: argparse.Namespace, overrides: Sequence[str]) -> BuildConfig:
    """The defaults, then the ``KEY=VALUE`` overrides, then the flags given."""
    from dataclasses import replace

    from pipeline.training.config import GENERATE_KEYS, resolve

    cfg = resolve(overrides=overrides, only=GENERATE_KEYS)
    gen = cfg.generate
    return replace(
        cfg,
        teacher=cfg.teacher if args.teacher is None else args.teacher,
        teacher_concurrency=(
            cfg.teacher_concurrency if args.concurrency is None else args.concurrency
        ),
        teacher_context_window=(
            cfg.teacher_context_window if args.context_window is None else args.context_window
        ),
        generate=replace(
            gen,
            samples=gen.samples if args.samples is None else args.samples,
            critic=False if args.no_critic else gen.critic,
        ),
    )


def add_build_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "build",
        help="build the model from the whole taxonomy",
        description="Validate the whole tree, generate data (cached per leaf), mix, train phase 1 "
        "(knowledge) and phase 2 (skills + knowledge replay), evaluate every leaf against the "
        "base model, and write the model, its card and a report into the run directory.",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="build config YAML (see "
        "pipeline/training/configs/default.yaml); default: the embedded defaults",
    )
    p.add_argument(
        "--out",
        metavar="RUN_DIR",
        default=None,
        help="run directory (default runs/build-<UTC time>)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last completed stage or checkpoint",
    )
    p.add_argument(
        "--taxonomy",
        metavar="DIR",
        help="taxonomy root (default: from .github/labbot.yml, else taxonomy/)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="change one setting after --config, e.g. generate.max_tokens=512 phase1.epochs=2 "
        "(keys as in pipeline/training/configs/default.yaml; values read as YAML scalars)",
    )
    p.set_defaults(func=run_build)


def _teacher_api_key() -> str | None:
    """The teacher's API key: LABBOT_TEACHER_API_KEY, else OPENAI_API_KEY (never a flag, so it
    stays out of shell history and process listings)."""
    return os.environ.get("LABBOT_TEACHER_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def run_build(args: argparse.Namespace) -> int:
    import json as json_mod

    from pipeline.embedded import default_cache_dir
    from pipeline.redact import redact_config
    from pipeline.training import config as buildconfig
    from pipeline.training.build import Build

    repo_config = _config(argparse.Namespace(config=None), Path.cwd())
    cfg = buildconfig.load(Path(args.config) if args.config else None, args.overrides)
    root = Path(args.taxonomy) if args.taxonomy else _taxonomy_root(repo_config)
    if args.out:
        run_dir = Path(args.out)
    elif args.resume:
        raise UsageError("resuming needs the run directory to continue", setting="resume")
    else:
        run_dir = Path("runs") / time.strftime("build-%Y%m%dT%H%M%SZ", time.gmtime())
    sys.stdout.write(f"labbot build: taxonomy {root}, run directory {run_dir}\n")
    shown = redact_config(cfg.as_dict())
    sys.stdout.write("resolved configuration:\n" + json_mod.dumps(shown, indent=2) + "\n")
    sys.stdout.flush()

    def log(message: str) -> None:
        sys.stdout.write(time.strftime("%H:%M:%S ") + message + "\n")
        sys.stdout.flush()

    build = Build(
        root,
        repo_config,
        cfg,
        run_dir,
        default_cache_dir(),
        resume=args.resume,
        log=log,
        teacher_api_key=_teacher_api_key(),
    )
    try:
        manifest = build.run_all()
    except LabbotError as exc:
        return report_error(exc, sys.stderr, "build stopped: ")
    metrics = manifest["metrics"]
    sys.stdout.write(
        f"\nbuilt {run_dir / 'model'} in {manifest['seconds']:.0f} s: {metrics['improved']} of "
        f"{metrics['leaves']} leaves improved over the base model. "
        f"Report: {run_dir / 'report.md'}\n"
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labbot",
        description="labbot: validate, preview and build LAB-method taxonomies.",
    )
    parser.add_argument("--version", action="version", version=f"labbot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_check_parser(sub)
    add_generate_parser(sub)
    add_build_parser(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; an error is told by
    :mod:`pipeline.cli_errors` and exits with its status from :class:`ExitCode`."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.func(args)
        return code
    except LabbotError as exc:
        return report_error(exc, sys.stderr)
    except KeyboardInterrupt:
        sys.stderr.write("labbot: interrupted\n")
        return ExitCode.INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)
