"""Training on several processes: 2 CPU processes (torchrun, gloo) against 1, for DDP and FSDP2,
full fine-tuning and LoRA; a killed 2-process run resumed; a failing rank stopping every rank.

Each launch runs several jobs in one pair of processes (tests/support/distributed_worker.py) because
starting torch twice costs more than the tiny trainings. Tolerances: fp32 on the CPU, where the
2-process gradient differs from the 1-process one only in summation order (an all-reduce of two
partial sums instead of one sum): per-step losses within 1e-4 relative, final weights within
1e-4 absolute (the measured differences are ~1e-6, see docs/training.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from pipeline.training.loop import TrainConfig, train_phase
from tests.support.models import tiny_student
from tests.support.records import records

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "support" / "distributed_worker.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

#: Several packed rows per step (so ranks share steps, one with an odd number of rows), a
#: checkpoint every 2 steps, no dropout (its masks depend on which rank runs a row).
BASE: dict[str, Any] = {
    "lr": 2e-3,
    "epochs": 2,
    "batch_tokens": 400,
    "micro_batch_tokens": 128,
    "max_seq_len": 128,
    "min_steps_per_epoch": 3,
    "warmup_ratio": 0.2,
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "checkpoint_every_steps": 2,
    "keep_checkpoints": 1,
}
JOBS = {
    "ddp-full": {"lora": False, "parallel": "ddp"},
    "ddp-lora": {"lora": True, "parallel": "ddp", "lr": 2e-2},
    "fsdp-full": {"lora": False, "parallel": "fsdp"},
    "fsdp-lora": {"lora": True, "parallel": "fsdp", "lr": 2e-2, "loss_chunk_tokens": 16},
}
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4


#: ``accelerate launch`` runs torchrun's launcher underneath; ``--multi_gpu`` is what makes it
#: start 2 processes (``--cpu`` would start one), and it works without GPUs.
ACCELERATE = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu"]
ACCELERATE += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
ACCELERATE += ["--dynamo_backend", "no", "--main_process_port"]


def launch(
    spec: dict[str, Any], tmp: Path, timeout: float = 240, accelerate: bool = False
) -> subprocess.CompletedProcess:
    """Run the worker on 2 processes; return the finished launch (output in stdout)."""
    spec_file = tmp / f"spec-{time.monotonic_ns()}.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(WORKER)]
    if accelerate:
        command = [*ACCELERATE, str(free_port()), str(WORKER)]
    return subprocess.run(
        [*command, str(spec_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("distributed")
    return {
        "tmp": tmp,
        "model": str(tiny_student(tmp / "student")),
        "records": records(14, words=6),
        "held_out": records(3, seed=9, words=6),
    }


def spec_for(setup: dict[str, Any], jobs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return {
        "model": setup["model"],
        "records": setup["records"],
        "held_out": setup["held_out"],
        "result": str(setup["tmp"] / f"{name}.json"),
        "jobs": jobs,
    }


@pytest.fixture(scope="module")
def two_process(setup: dict[str, Any]) -> dict[str, Any]:
    """Every mode once on 2 processes, plus an FSDP LoRA run stopped after 3 steps and resumed."""
    tmp: Path = setup["tmp"]
    jobs: list[dict[str, Any]] = [
        {"name": name, "cfg": {**BASE, **extra}, "out": str(tmp / "two" / name)}
        for name, extra in JOBS.items()
    ]
    resumed = {**BASE, **JOBS["fsdp-lora"]}
    out = str(tmp / "two" / "fsdp-lora-resumed")
    jobs += [
        {"name": "fsdp-lora-stop", "cfg": resumed, "out": out, "stop_after": 3},
        {"name": "fsdp-lora-resumed", "cfg": resumed, "out": out},
    ]
    done = launch(spec_for(setup, jobs, "two"), tmp)
    assert done.returncode == 0, done.stdout[-4000:]
    result: dict[str, Any] = json.loads((tmp / "two.json").read_text())
    assert result["world"] == 2
    return result


def one_process(setup: dict[str, Any], name: str) -> tuple[list[float], Path]:
    cfg = TrainConfig(**{**BASE, **JOBS[name]})
    out = setup["tmp"] / "one" / name
    result = train_phase(cfg, Path(setup["model"]), setup["records"], setup["held_out"], out)
    assert result.final_dir is not None
    return [h["loss"] for h in result.history], result.final_dir


def max_rel_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) and a
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def max_weight_diff(a: Path, b: Path) -> float:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    return max(float((first[k] - second[k]).abs().max()) for k in first)


@pytest.mark.parametrize("name", list(JOBS))
def test_two_processes_train_like_one(
    name: str, setup: dict[str, Any], two_process: dict[str, Any]
) -> None:
    losses, final = one_process(setup, name)
    two = two_process[name]
    assert len(losses) == two["steps"] >= 6  # the same global batches: same number of steps
    # Both ranks took part (accelerate alone would run 2 independent copies on the CPU).
    state = next((setup["tmp"] / "two" / name / "checkpoints").glob("step-*")) / "state"
    assert sorted(p.name for p in state.glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]
    if name.startswith("fsdp"):  # each rank wrote its own shard
        assert len(list(state.glob("*.distcp"))) == 2
    assert losses[-1] < losses[0]  # it learned something, so equal curves mean something
    two_final = setup["tmp"] / "two" / name / "final"
    loss_diff, weight_diff = max_rel_diff(two["losses"], losses), max_weight_diff(two_final, final)
    print(f"{name}: 2 vs 1 process: loss {loss_diff:.2e} relative, weights {weight_diff:.2e}")
    assert loss_diff < LOSS_RTOL, (two["losses"], losses)
    assert weight_diff < WEIGHT_ATOL
    base = Path(setup["model"])
    assert max_weight_diff(two_final, base) > 10 * WEIGHT_ATOL  # and the weights did move


def test_stopped_two_process_fsdp_run_resumes_where_an_uninterrupted_one_ends(
    setup: dict[str, Any], two_process: dict[str, Any]
) -> None:
    stopped, resumed = two_process["fsdp-lora-stop"], two_process["fsdp-lora-resumed"]
    straight = two_process["fsdp-lora"]
    assert len(stopped["losses"]) == 3  # stopped after step 3, the checkpoint is at step 2
    assert max_rel_diff(resumed["losses"], straight["losses"]) < 1e-6
    out = setup["tmp"] / "two"
    assert max_weight_diff(out / "fsdp-lora-resumed" / "final", out / "fsdp-lora" / "final") < 1e-6


def test_killed_two_process_ddp_run_resumes_where_an_uninterrupted_one_ends(
    setup: dict[str, Any], two_process: dict[str, Any], tmp_path: Path
) -> None:
    """SIGKILL on rank 0 after step 3: torchrun stops rank 1; a new launch (accelerate launch
    this time) resumes from the step-2 checkpoint (its shards and both ranks' RNG states) and
    ends as the straight run did."""
    out = str(tmp_path / "run")
    cfg = {**BASE, **JOBS["ddp-lora"]}
    spec = spec_for(setup, [{"name": "killed", "cfg": cfg, "out": out, "kill_after": 3}], "kill")
    killed = launch(spec, tmp_path)
    assert killed.returncode != 0
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")) == [
        "step-000002"
    ]
    spec = spec_for(setup, [{"name": "resumed", "cfg": cfg, "out": out}], "resume")
    resumed = launch(spec, tmp_path, accelerate=True)
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    losses = json.loads((setup["tmp"] / "resume.json").read_text())["resumed"]["losses"]
    assert max_rel_diff(losses, two_process["ddp-lora"]["losses"]) < 1e-6
    straight = setup["tmp"] / "two" / "ddp-lora" / "final"
    assert max_weight_diff(tmp_path / "run" / "final", straight) < 1e-6


def test_a_failing_rank_stops_every_rank_and_is_named(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """Rank 0 failing in a rank-0 stage reaches rank 1 as RankFailed; then rank 1 failing in
    training ends the launch non-zero, naming rank 1, long before any collective timeout."""
    cfg = {**BASE, **JOBS["ddp-full"]}
    jobs = [
        {"name": "zero", "kind": "fail_on_zero"},
        {"name": "one", "kind": "fail_rank", "rank": 1, "after": 2, "cfg": cfg},
    ]
    jobs[1]["out"] = str(tmp_path / "run")
    started = time.monotonic()
    done = launch(spec_for(setup, jobs, "fail"), tmp_path, timeout=180)
    seconds = time.monotonic() - started
    assert done.returncode != 0
    assert "RankFailed: rank 1 of 2 failed in training: disk full on rank 1" in done.stdout
    assert seconds < 120  # gloo's default timeout is 30 minutes
    errors = json.loads((setup["tmp"] / "fail.json").read_text())["zero"]["errors"]
    assert errors == [
        ["RuntimeError: no teacher"],
        ["RankFailed: rank 0 of 2 failed in a rank-0 stage: RuntimeError: no teacher"],
    ]
    assert not (tmp_path / "run" / "final").exists()


def test_weights_compare_helper_sees_a_difference(setup: dict[str, Any], tmp_path: Path) -> None:
    """The comparisons above can fail: one changed weight is seen."""
    base = Path(setup["model"])
    weights = load_file(base / "model.safetensors")
    key = next(iter(weights))
    weights[key] = weights[key] + 1e-3
    from safetensors.torch import save_file

    (tmp_path / "m").mkdir()
    save_file(weights, tmp_path / "m" / "model.safetensors")
    assert max_weight_diff(tmp_path / "m", base) == pytest.approx(1e-3, rel=1e-2)
    assert max_rel_diff([1.0, 2.0], [1.0, 2.1]) == pytest.approx(0.1 / 2.1)


def test_labbot_build_runs_unchanged_under_torchrun(tmp_path: Path) -> None:
    """``torchrun -m pipeline build`` on 2 processes: one generation (each teacher request once),
    one log, every stage and the manifest written, both ranks in both training phases."""
    from tests.support.builds import TINY
    from tests.support.scripted_teacher import scripted
    from tests.support.teacher_server import ScriptedTeacherServer

    student = tiny_student(tmp_path / "student")
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env["LABBOT_CACHE_DIR"] = str(tmp_path / "cache")  # cold: every request reaches the teacher
    env.pop("WORLD_SIZE", None)
    with ScriptedTeacherServer(scripted, concurrency=4) as server:
        config = tmp_path / "build.yaml"
        config.write_text(json.dumps({**TINY, "teacher": server.url, "student": str(student)}))
        command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "pipeline"]
        command += ["build", "--config", str(config), "--out", str(run)]
        command += ["--taxonomy", str(ROOT / "taxonomy")]
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        bodies = [json.dumps(r["body"], sort_keys=True) for r in server.chat_requests()]
    assert done.returncode == 0, done.stdout[-4000:]
    assert bodies and len(set(bodies)) == len(bodies)  # generated once, not once per rank
    assert done.stdout.count("generate: running") == 1  # rank 0 logs, the other rank does not
    assert json.loads((run / "manifest.json").read_text())["metrics"]["leaves"] > 0
    assert (run / "report.md").is_file() and (run / "model" / "README.md").is_file()
    for phase in ("phase1", "phase2"):
        state = next((run / phase / "checkpoints").glob("step-*")) / "state"
        assert sorted(p.name for p in state.glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]
    assert not list(run.rglob(".staging-*"))
