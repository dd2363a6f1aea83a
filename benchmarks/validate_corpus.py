"""Benchmark: validate the whole real-world corpus in one process and print ms per file.

    .venv/bin/python benchmarks/validate_corpus.py [CORPUS_DIR] [--repeat N]

The target (issue 2) is at least 20x faster than the upstream parser's 56 ms/file on these
machines (../shared/docs/facts.md), i.e. at most 2.8 ms/file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import RepoConfig  # noqa: E402
from pipeline.taxonomy.validate import PROFILES, validate_path  # noqa: E402

UPSTREAM_MS = 56.0


def main() -> int:
    default = Path(__file__).resolve().parent.parent.parent / "shared" / "taxonomy-corpus"
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("corpus", nargs="?", default=str(default))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    corpus = Path(args.corpus)
    index = corpus / "verdicts.jsonl"
    if not index.is_file():
        print(f"no corpus at {corpus}")
        return 2
    files = [str(corpus / json.loads(ln)["file"]) for ln in index.read_text().splitlines()]
    config = RepoConfig()
    for profile in ("tree", "pr"):
        timings = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            for f in files:
                validate_path(f, PROFILES[profile], config)
            timings.append((time.perf_counter() - start) * 1000 / len(files))
        best, med = min(timings), statistics.median(timings)
        print(
            f"profile {profile}: {len(files)} files, best {best:.3f} ms/file, median "
            f"{med:.3f} ms/file, {UPSTREAM_MS / med:.0f}x faster than upstream's "
            f"{UPSTREAM_MS:.0f} ms/file"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
