"""One process of a multi-process training test, launched by
tests/integration/test_distributed.py with
``torchrun --nproc_per_node 2 tests/support/distributed_worker.py SPEC.json``.

SPEC: ``{"model": dir, "result": file, "records": [...], "held_out": [...], "jobs": [...]}``.
Each job trains one phase with ``train_phase`` (``cfg``: TrainConfig fields, ``out``: its
out_dir) or provokes a failure. Rank 0 rewrites ``result`` after every job (loss curves and
caught error messages per job), so whatever finished survives a later kill.

Job kinds:
- ``train``: ``stop_after`` N raises on every rank after step N (an interruption; the next job
  resumes), ``kill_after`` N kills this process with SIGKILL after step N (rank 0 only).
- ``fail_on_zero``: rank 0 raises inside ``Dist.on_rank_zero``; every rank records what it got.
- ``fail_rank``: rank ``rank`` raises from the progress callback after step ``after``, inside
  ``Dist.on_every_rank`` as ``labbot build`` runs training; the launch must end non-zero.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from pipeline.training import distributed
from pipeline.training.loop import TrainConfig, train_phase


class Stop(BaseException):  # noqa: N818
    """The planned interruption of a ``stop_after`` job (not an Exception: it passes through
    ``on_every_rank`` unwrapped, as a KeyboardInterrupt would)."""


def main(spec_path: str) -> None:
    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    d = distributed.init()
    results: dict[str, Any] = {"world": d.world}
    for job in spec["jobs"]:
        name, kind = job["name"], job.get("kind", "train")
        if kind == "fail_on_zero":
            got: list[str] = []
            try:
                d.on_rank_zero("a rank-0 stage", lambda: _raise(RuntimeError("no teacher")))
            except Exception as exc:
                got.append(f"{type(exc).__name__}: {exc}")
            results[name] = {"errors": _gather(got)}
        else:
            results[name] = _train(job, spec, d)
        if d.is_main:
            Path(spec["result"]).write_text(json.dumps(results))


def _train(job: dict[str, Any], spec: dict[str, Any], d: distributed.Dist) -> dict[str, Any]:
    history: list[dict[str, Any]] = []
    stop_after, kill_after = job.get("stop_after"), job.get("kill_after")
    fail_rank = job.get("rank") if job.get("kind") == "fail_rank" else None

    def progress(event: dict[str, Any]) -> None:
        if event["event"] != "step":
            return
        history.append(event)
        step = event["step"]
        if fail_rank == d.rank and step == job["after"]:
            raise RuntimeError(f"disk full on rank {d.rank}")
        if kill_after == step and d.is_main:
            os.kill(os.getpid(), signal.SIGKILL)
        if stop_after == step:
            raise Stop()

    cfg = TrainConfig(**job["cfg"])
    run = lambda: train_phase(  # noqa: E731
        cfg,
        Path(spec["model"]),
        spec["records"],
        spec.get("held_out", []),
        Path(job["out"]),
        resume=job.get("resume", True),
        progress=progress,
    )
    try:
        result = d.on_every_rank("training", run)
    except Stop:
        return {"losses": [h["loss"] for h in history], "stopped": True}
    return {
        "losses": [h["loss"] for h in result.history],
        "grad_norms": [h["grad_norm"] for h in result.history],
        "eval_losses": [e["loss"] for e in result.eval_losses],
        "steps": result.steps,
    }


def _gather(items: list[str]) -> list[list[str]]:
    """Every rank's list, on every rank (rank order)."""
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, items)
    return out


def _raise(exc: Exception) -> None:
    raise exc


if __name__ == "__main__":
    main(sys.argv[1])
