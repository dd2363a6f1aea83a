"""Checkpoints of a training phase: torch.distributed.checkpoint folders with the loop state,
retention, the best checkpoint by evaluation loss, and the final adapter and merged weights.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as tdist
from peft import PeftModel
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.optim.lr_scheduler import LambdaLR
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
)

from pipeline.training.distributed import Dist
from pipeline.training.loss import evaluate_loss, unwrap
from pipeline.training.packing import Tokenized

if TYPE_CHECKING:
    from pipeline.training.loop import TrainConfig


STATE_FILE = "trainer_state.json"


CHECKPOINT_FORMAT = 2  # 2: torch.distributed.checkpoint (1 was accelerate's save_state)


@dataclass
class LoopState:
    """Loop position and logs: saved in every checkpoint, restored on resume."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_losses: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """peft 0.21 reads transformers 5's deprecated ``is_gradient_checkpointing`` (a warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".is_gradient_checkpointing. is deprecated", category=FutureWarning
        )
        yield


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("step-*") if (p / STATE_FILE).is_file())


def latest_checkpoint(directory: Path) -> Path | None:
    existing = list_checkpoints(directory)
    return existing[-1] if existing else None


def save_checkpoint(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    held: Sequence[Tokenized],
    cfg: TrainConfig,
    state: LoopState,
    directory: Path,
    fingerprint: str,
    autocast: bool,
    d: Dist,
) -> Path:
    """Score the held-out set, save the full training state, prune old checkpoints.

    Every rank writes its shard of the model and optimizer (torch.distributed.checkpoint) and
    its RNG state into a staging folder; rank 0 writes the rest and renames the folder once all
    ranks are done, so a kill never leaves a half checkpoint that looks whole.
    """
    eval_loss = evaluate_loss(module, held, cfg.micro_batch_tokens, d, autocast)
    path = directory / f"step-{state.step:06d}"
    state.eval_losses.append(
        {"step": state.step, "epoch": state.history[-1]["epoch"], "loss": eval_loss}
    )
    staging = directory / f".staging-{state.step:06d}"
    if d.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    d.barrier()
    options = StateDictOptions(ignore_frozen_params=cfg.lora)  # LoRA: the adapter, not the base
    model_state, optim_state = get_state_dict(module, optimizer, options=options)
    with _single_process_dcp(d):
        dcp_save({"model": model_state, "optimizer": optim_state}, checkpoint_id=staging / "state")
    torch.save(_rng_state(), staging / "state" / f"rng-{d.rank}.pt")
    if cfg.lora:
        _save_adapter(module, staging / "adapter", d)
    d.barrier()
    if d.is_main:
        torch.save(scheduler.state_dict(), staging / "state" / "scheduler.pt")
        payload = {"fingerprint": fingerprint, "format": CHECKPOINT_FORMAT, "state": asdict(state)}
        (staging / STATE_FILE).write_text(json.dumps(payload, indent=2))
        shutil.rmtree(path, ignore_errors=True)
        staging.rename(path)
        prune_checkpoints(directory, state.eval_losses, cfg.keep_checkpoints)
    d.barrier()
    return path


def load_checkpoint(
    path: Path,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    lora: bool,
    d: Dist,
) -> LoopState:
    """Restore what :func:`save_checkpoint` wrote, on any number of processes (DCP reshards).

    A rank without its own RNG file (more processes than when saved) keeps its seeded RNG: the
    data plan does not depend on the number of processes, dropout masks do.
    """
    stored = json.loads((path / STATE_FILE).read_text())
    options = StateDictOptions(ignore_frozen_params=lora, strict=not lora)
    model_state, optim_state = get_state_dict(module, optimizer, options=options)
    loaded: dict[str, Any] = {"model": model_state, "optimizer": optim_state}
    with _single_process_dcp(d):
        dcp_load(loaded, checkpoint_id=path / "state")
    set_state_dict(
        module,
        optimizer,
        model_state_dict=loaded["model"],
        optim_state_dict=loaded["optimizer"],
        options=options,
    )
    scheduler.load_state_dict(torch.load(path / "state" / "scheduler.pt", weights_only=True))
    rng = path / "state" / f"rng-{d.rank}.pt"
    if rng.is_file():
        _set_rng_state(torch.load(rng, weights_only=False))
    return LoopState(**stored["state"])


@contextlib.contextmanager
def _single_process_dcp(d: Dist) -> Iterator[None]:
    """torch.distributed.checkpoint warns on every save and load without a process group,
    which is the normal one-process case here."""
    with warnings.catch_warnings():
        if d.world == 1:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def prune_checkpoints(directory: Path, eval_losses: list[dict[str, Any]], keep: int) -> None:
    """Keep the newest checkpoint and the best by held-out loss, up to ``keep`` in all."""
    existing = list_checkpoints(directory)
    keep_set = {existing[-1]}
    best = best_checkpoint(directory, eval_losses)
    if best is not None and len(keep_set) < keep:
        keep_set.add(best)
    for path in reversed(existing):
        if len(keep_set) >= keep:
            break
        keep_set.add(path)
    for path in existing:
        if path not in keep_set:
            shutil.rmtree(path)


def best_checkpoint(directory: Path, eval_losses: list[dict[str, Any]]) -> Path | None:
    """The existing checkpoint with the lowest held-out loss (the newest if none was scored)."""
    existing = {p.name: p for p in list_checkpoints(directory)}
    scored = [e for e in eval_losses if f"step-{e['step']:06d}" in existing]
    if not scored:
        return None
    if all(e["loss"] is None for e in scored):
        choice = scored[-1]
    else:
        choice = min((e for e in scored if e["loss"] is not None), key=lambda e: e["loss"])
    return existing[f"step-{choice['step']:06d}"]


def _full_state_dict(module: nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The model's full state dict on rank 0 (gathered under FSDP; empty on other ranks),
    keys without our ``model.`` prefix. A collective: every rank calls it."""
    options = StateDictOptions(
        full_state_dict=True,
        cpu_offload=tdist.is_initialized(),
        ignore_frozen_params=trainable_only,
    )
    state = get_model_state_dict(module, options=options)
    return {k.removeprefix("model."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _save_adapter(module: nn.Module, target: Path, d: Dist) -> None:
    state = _full_state_dict(module, trainable_only=True)
    if d.is_main:
        peft_model = unwrap(module).model
        assert isinstance(peft_model, PeftModel)
        peft_model.save_pretrained(str(target), state_dict=state)


def save_final(
    module: nn.Module,
    cfg: TrainConfig,
    base_model_dir: Path,
    tokenizer: Any,
    out_dir: Path,
    d: Dist,
) -> tuple[Path, Path | None]:
    """Write ``adapter/`` (LoRA) and ``final/``: merged weights in the base model's dtype."""
    final_dir, adapter_dir = out_dir / "final", out_dir / "adapter" if cfg.lora else None
    staging = out_dir / ".staging-final"
    dtype = _stored_dtype(base_model_dir)
    if d.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    d.barrier()
    if adapter_dir is not None:
        _save_adapter(module, staging / "adapter", d)
    else:
        state = _full_state_dict(module, trainable_only=False)
    if d.is_main:
        if adapter_dir is not None:
            base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
            with quiet_peft():
                merged: Any = PeftModel.from_pretrained(base, staging / "adapter")
            merged = merged.merge_and_unload()
            merged.to(dtype=dtype)
            merged.save_pretrained(staging / "final")
        else:
            model = unwrap(module).model
            assert isinstance(model, PreTrainedModel)
            cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
            _retie(model, cast)
            trained_dtype, model.config.dtype = model.config.dtype, dtype
            model.save_pretrained(staging / "final", state_dict=cast)
            model.config.dtype = trained_dtype
        tokenizer.save_pretrained(staging / "final")
        for name in ("final", "adapter"):
            if (staging / name).exists():
                shutil.rmtree(out_dir / name, ignore_errors=True)
                (staging / name).rename(out_dir / name)
        shutil.rmtree(staging)
    d.barrier()
    return final_dir, adapter_dir


def _retie(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Make tied parameters (tied input/output embeddings) one tensor again in ``state``.

    A state dict gathered from FSDP shards holds a separate copy under each name, which
    ``save_pretrained`` would write twice; it drops duplicates only when they share storage.
    """
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    for group in names.values():
        present = [n for n in group if n in state]
        for name in present[1:]:
            state[name] = state[present[0]]


def _stored_dtype(model_dir: Path) -> torch.dtype:
    """The dtype the base model's weights are stored in (float32 when unstated)."""
    dtype = getattr(AutoConfig.from_pretrained(model_dir), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32
