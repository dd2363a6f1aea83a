"""Benchmark: the worst validation time of each hostile file class beside a real file's.

    .venv/bin/python benchmarks/hostile.py [--repeat N] [--class NAME ...]

Each class of tests/support/hostile.py comes in several sizes up to just under the 2 MiB file
cap; the table prints, per class, the slowest CPU time over its sizes (best of N runs each) and
the size at which it happened, beside the median time of the real files in taxonomy/ and in
../shared/taxonomy-corpus when present. The target (issue 10) is under 1 s per file on one core.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import RepoConfig  # noqa: E402
from pipeline.taxonomy.validate import NOT_LOOKED_UP, PROFILES, validate_bytes  # noqa: E402
from tests.support.hostile import PATH, cases  # noqa: E402

TARGET_S = 1.0


def cpu_seconds(raw: bytes, path: str, repeat: int) -> tuple[float, bool]:
    """Best-of-``repeat`` process CPU time of one validation, and the verdict."""
    best = float("inf")
    valid = False
    config = RepoConfig()
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        result = validate_bytes(raw, path, PROFILES["pr"], config, NOT_LOOKED_UP)
        best = min(best, time.process_time() - start)
        valid = result.valid
    return best, valid


def median_real(files: list[Path], root: Path) -> float:
    times = [cpu_seconds(p.read_bytes(), str(p.relative_to(root)), 3)[0] for p in files]
    return statistics.median(times) if times else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--class", dest="classes", action="append", metavar="NAME")
    args = ap.parse_args()

    root = Path(__file__).resolve().parent.parent
    taxonomy = sorted((root / "taxonomy").rglob("qna.yaml"))
    corpus_dir = root.parent / "shared" / "taxonomy-corpus" / "blobs"
    corpus = sorted(corpus_dir.rglob("qna.yaml")) if corpus_dir.is_dir() else []
    real_tax = median_real(taxonomy, root)
    print(f"median real file, taxonomy/ ({len(taxonomy)} files): {real_tax * 1000:.2f} ms")
    if corpus:
        real_corpus = median_real(corpus, corpus_dir)
        print(f"median real file, corpus ({len(corpus)} files): {real_corpus * 1000:.2f} ms")

    worst: dict[str, tuple[float, str, int, bool]] = {}
    for case in cases():
        if args.classes and case.klass not in args.classes:
            continue
        seconds, valid = cpu_seconds(case.data, PATH, args.repeat)
        if case.klass not in worst or seconds > worst[case.klass][0]:
            worst[case.klass] = (seconds, case.size, len(case.data), valid)

    print(f"\n{'hostile class':26} {'worst CPU':>10} {'at size':>8} {'bytes':>10}  verdict  x real")
    over = 0
    for klass, (seconds, size, nbytes, valid) in worst.items():
        ratio = seconds / real_tax if real_tax else float("nan")
        flag = "" if seconds < TARGET_S else "  OVER 1 s"
        over += seconds >= TARGET_S
        verdict = "valid" if valid else "invalid"
        print(
            f"{klass:26} {seconds * 1000:8.0f} ms {size:>8} {nbytes:>10,}  {verdict:7} "
            f"{ratio:7.0f}x{flag}"
        )
    slowest = max(worst.values())[0] if worst else 0.0
    print(f"\nslowest hostile file: {slowest:.3f} s CPU; classes over {TARGET_S:.0f} s: {over}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
