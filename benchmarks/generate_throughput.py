"""Benchmark: does the generation pipeline keep the teacher busy, and is a rerun free?

Runs `generate_leaves` over the sample taxonomy against a scripted OpenAI-compatible teacher
with a fixed latency and a concurrency limit C (a real HTTP server on loopback), then prints:
request rate vs the ideal C / latency, teacher utilisation (target >= 90%), teacher tokens per
kept sample, and the teacher calls of a second run of the unchanged tree (target 0).

    .venv/bin/python benchmarks/generate_throughput.py [--latency 0.2] [--concurrency 4 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config import load_config  # noqa: E402
from pipeline.sdg.generate import GenerateConfig, generate_leaves  # noqa: E402
from pipeline.sdg.teacher import OpenAITeacher  # noqa: E402
from pipeline.taxonomy.documents import leaf_documents  # noqa: E402
from pipeline.taxonomy.leaves import load_leaves  # noqa: E402
from tests.support.scripted_teacher import scripted  # noqa: E402
from tests.support.teacher_server import ScriptedTeacherServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--samples", type=int, default=24)
    args = ap.parse_args()
    config = load_config(ROOT / ".github" / "labbot.yml")
    leaves, _ = load_leaves(ROOT / "taxonomy", config)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        work = [(leaf, leaf_documents(leaf, config, cache / "docs")) for leaf in leaves]
        for c in args.concurrency:
            with (
                ScriptedTeacherServer(scripted, latency=args.latency, concurrency=c) as server,
                OpenAITeacher(server.url, concurrency=c) as teacher,
            ):
                cfg = GenerateConfig(samples=args.samples)
                start = time.monotonic()
                results = generate_leaves(work, teacher, cfg, cache_dir=cache / f"c{c}")
                wall = time.monotonic() - start
                calls = len(server.chat_requests())
                kept = sum(len(r.kept) for r in results)
                tokens = sum(r.prompt_tokens + r.completion_tokens for r in results)
                ideal = c / args.latency
                rate = calls / wall
                print(
                    f"C={c}, latency {args.latency * 1000:.0f} ms: {calls} teacher calls in "
                    f"{wall:.2f} s = {rate:.1f} req/s vs ideal {ideal:.1f} req/s "
                    f"({100 * rate / ideal:.0f}%); server busy {100 * server.utilisation():.0f}% "
                    f"of C slots; {kept} samples kept, {tokens / max(1, kept):.0f} teacher tokens "
                    f"per kept sample"
                )
                server.reset()
                again = generate_leaves(work, teacher, cfg, cache_dir=cache / f"c{c}")
                print(
                    f"  second run of the unchanged tree: {len(server.chat_requests())} teacher "
                    f"calls, {sum(1 for r in again if r.cached)}/{len(again)} leaves from cache"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
