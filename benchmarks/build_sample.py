"""Benchmark: the README's main job. `labbot build` on the sample taxonomy with the embedded
defaults (SmolLM2-135M student and teacher, LoRA, CPU), timed, with its per-leaf verdict.

Targets (issue 5): finishes on 2 CPU cores in <= 15 minutes, and phase 2 scores above the base
model on most leaves.

    .venv/bin/python benchmarks/build_sample.py [--out RUN_DIR] [--config FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None)
    ap.add_argument("--config", default=None)
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="labbot-build-")) / "run"
    cmd = [str(ROOT / ".venv" / "bin" / "labbot"), "build", "--out", str(out)]
    if args.config:
        cmd += ["--config", args.config]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), text=True, capture_output=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:])
        print(f"build failed with exit status {proc.returncode} after {wall:.0f} s")
        return 1
    manifest = json.loads((out / "manifest.json").read_text())
    table = json.loads((out / "eval" / "leaves.json").read_text())
    print(
        f"labbot build on the sample taxonomy: {wall / 60:.1f} min wall on {os.cpu_count()} "
        f"CPU(s) (target <= 15 min); stages: {manifest['timings']}"
    )
    print(f"generation: {manifest['data']['generation']}")
    print(
        f"phase 1: {manifest['metrics']['phase1_tokens']} tokens, phase 2: "
        f"{manifest['metrics']['phase2_tokens']} tokens"
    )
    for row in table:
        print(
            f"  {row['leaf']:<70} ROUGE-L {row['base_rouge_l']:.3f} -> {row['phase2_rouge_l']:.3f}"
            f"  ref loss {row['base_ref_loss']:.3f} -> {row['phase2_ref_loss']:.3f}"
            f"  {'improved' if row.get('improved') else 'not improved'}"
        )
    improved = sum(1 for r in table if r.get("improved"))
    print(
        f"{improved} of {len(table)} leaves improved over the base model (target: most); "
        f"report: {out / 'report.md'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
