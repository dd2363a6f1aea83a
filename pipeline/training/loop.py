"""Training one phase: LoRA or full fine-tuning of a causal LM on packed chat samples.

``train_phase`` reads top to bottom: setup (model, tokenizer, data, optimizer) → one loop
(accumulate micro-batches, clip, step, log, checkpoint) → one save. Both LAB phases call it with
different :class:`TrainConfig` values. Only this module and :mod:`.checkpoints` import peft; the
loss is in :mod:`.loss`, the varlen attention in :mod:`.attention`.

Loss: cross-entropy summed over every trained token of an optimizer step (all micro-batches and
all ranks) and divided by that step's number of trained tokens, so a step's gradient does not
depend on how its samples were packed or split, nor on how many processes share the step.

Several processes (``torchrun``, ``accelerate launch``): every rank plans the same steps and
takes every ``world``-th row of each step; the model is wrapped in DDP or sharded with FSDP2
(``fully_shard``) by torch.distributed directly, the same code on GPUs (NCCL) and the CPU
(gloo), which is how the CPU tests cover it. Checkpoints are torch.distributed.checkpoint
folders (sharded under FSDP, loadable with any number of processes); rank 0 writes everything
else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    set_seed,
)

from pipeline.errors import UsageError
from pipeline.training import distributed
from pipeline.training.attention import VARLEN, register_varlen_attention
from pipeline.training.checkpoints import (
    CHECKPOINT_FORMAT,
    STATE_FILE,
    LoopState,
    best_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    quiet_peft,
    save_checkpoint,
    save_final,
)
from pipeline.training.distributed import Dist
from pipeline.training.loss import (
    PackedLoss,
    decoder_of,
    forward_backward,
    sum_over_ranks,
    to_float,
)
from pipeline.training.packing import PackedRow, Tokenized, TooLong, plan_epoch, tokenize

log = logging.getLogger(__name__)

Dtype = Literal["auto", "float32", "bfloat16", "bf16-mixed"]
Parallel = Literal["ddp", "fsdp"]


_RESULT_FILE = "result.json"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one phase. Token counts are real (unpadded) tokens.

    ``batch_tokens`` is the target number of tokens per optimizer step; ``micro_batch_tokens``
    the most tokens in one packed row (one forward/backward). Small datasets get at least
    ``min_steps_per_epoch`` steps per epoch (the batch shrinks to fit), and warmup is
    ``warmup_ratio`` of all steps, so LAB's shape survives any data size.

    ``dtype``: ``auto`` is float32 on the CPU; on a GPU it is ``bf16-mixed`` (float32 master
    weights, bfloat16 autocast) for full fine-tuning and a bfloat16 frozen base with float32
    adapters for LoRA. ``bfloat16`` trains pure bfloat16 weights (faster, but small updates
    round away at LAB's learning rates).

    ``attn_implementation``: ``sdpa`` (default), ``eager``, ``flex_attention`` or ``varlen``
    (flash-attention varlen kernel from ``torch.nn.attention.varlen`` on CUDA; a slow exact
    reference elsewhere). ``chunked_loss`` computes logits only at trained positions, in chunks
    of ``loss_chunk_tokens`` that are recomputed in backward, so the full-vocabulary logits of a
    long row are never held in memory.

    Checkpoints are written at the end of each epoch, or every ``checkpoint_every_steps`` steps,
    and at the last step; ``checkpoint_every_steps=0`` writes none (benchmarks).
    ``max_steps`` stops early without changing the schedule (benchmarks, smoke runs).

    ``parallel`` matters only with several processes: ``ddp`` replicates the model on every
    rank, ``fsdp`` shards parameters, gradients and optimizer state (FSDP2, one unit per decoder
    layer). ``accelerate launch`` with ``distributed_type: FSDP`` selects ``fsdp`` too.
    """

    lr: float
    epochs: int
    batch_tokens: int
    micro_batch_tokens: int
    warmup_ratio: float = 0.1
    min_steps_per_epoch: int = 4
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    max_seq_len: int = 1024
    gradient_checkpointing: bool = False
    seed: int = 42
    keep_checkpoints: int = 2
    checkpoint_every_steps: int | None = None
    dtype: Dtype = "auto"
    attn_implementation: str = "sdpa"
    chunked_loss: bool = True
    loss_chunk_tokens: int = 4096
    compile: bool = False
    fused_optimizer: bool = True
    max_steps: int | None = None
    save_final: bool = True
    parallel: Parallel = "ddp"

    def __post_init__(self) -> None:
        problems = []
        if self.lr <= 0 or self.epochs < 1:
            problems.append("lr must be > 0 and epochs >= 1")
        if self.micro_batch_tokens < self.max_seq_len:
            problems.append("micro_batch_tokens must be >= max_seq_len (a sample must fit a row)")
        if self.batch_tokens < 1 or self.min_steps_per_epoch < 1 or self.keep_checkpoints < 1:
            problems.append("batch_tokens, min_steps_per_epoch and keep_checkpoints must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            problems.append("warmup_ratio must be in [0, 1)")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 0:
            problems.append("checkpoint_every_steps must be >= 0 (0: no checkpoints)")
        if self.parallel not in ("ddp", "fsdp"):
            problems.append(f"parallel must be 'ddp' or 'fsdp', not {self.parallel!r}")
        if problems:
            raise UsageError("invalid TrainConfig: " + "; ".join(problems))


@dataclass
class PhaseResult:
    """What one phase produced. Paths are absolute; ``adapter_dir`` is None without LoRA."""

    out_dir: Path
    final_dir: Path | None
    adapter_dir: Path | None
    history: list[dict[str, Any]]
    eval_losses: list[dict[str, Any]]
    best_checkpoint: Path | None
    tokens_trained: int
    seconds: float
    skipped_too_long: int
    skipped_unlabelled: int = 0
    steps: int = 0
    steps_per_epoch: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("out_dir", "final_dir", "adapter_dir", "best_checkpoint"):
            data[key] = None if data[key] is None else str(data[key])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PhaseResult:
        paths = {
            key: None if data[key] is None else Path(data[key])
            for key in ("out_dir", "final_dir", "adapter_dir", "best_checkpoint")
        }
        return cls(**{**data, **paths})


def train_phase(
    cfg: TrainConfig,
    base_model_dir: Path,
    train: list[dict[str, Any]],
    held_out: list[dict[str, Any]],
    out_dir: Path,
    *,
    resume: bool = True,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> PhaseResult:
    """Train ``base_model_dir`` on ``train`` chat records; write checkpoints and the final model.

    Layout of ``out_dir``: ``checkpoints/step-NNNNNN/`` (full training state, plus the adapter
    for LoRA), ``adapter/`` (LoRA), ``final/`` (merged weights, tokenizer and chat template in a
    folder ``AutoModelForCausalLM.from_pretrained`` loads) and ``result.json``.

    Args:
        cfg: the phase's hyper-parameters.
        base_model_dir: a Hugging Face model folder with tokenizer and chat template.
        train: chat records ``{"messages": [...], "unmask": bool}``.
        held_out: records scored (mean loss per trained token) at every checkpoint; the best
            checkpoint is chosen by it (the last one when empty).
        out_dir: where everything goes.
        resume: continue from the newest checkpoint in ``out_dir`` (or return the stored
            result of a finished run). False starts over, deleting earlier checkpoints.
        progress: called with each step's log record (``event="step"``) and after each
            checkpoint (``event="checkpoint"``). An exception raised there stops training;
            the next call with ``resume=True`` continues from the last checkpoint.

    Raises:
        UsageError: ``out_dir`` holds a run with another config, base model or data.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    fingerprint = _fingerprint(cfg, base_model_dir, train, held_out)
    # ---- setup: processes, precision, tokenizer, data
    d = distributed.init()
    previous = d.on_rank_zero(
        f"checking {out_dir}", lambda: _check_out_dir(out_dir, fingerprint, resume)
    )
    if previous is not None:
        return previous
    device = torch.device(d.device)
    weight_dtype, autocast = _precision(cfg, device.type == "cuda")
    set_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    train_samples, too_long, unlabelled = _tokenize_all(train, tokenizer, cfg.max_seq_len)
    held_samples, _, _ = _tokenize_all(held_out, tokenizer, cfg.max_seq_len)
    if not train_samples:
        raise UsageError("no trainable samples (all too long or without trained tokens)")
    if (too_long or unlabelled) and d.is_main:
        log.warning("skipped %d too-long and %d unlabelled samples", too_long, unlabelled)

    plans: dict[int, list[list[PackedRow]]] = {}

    def plan(epoch: int) -> list[list[PackedRow]]:
        """The epoch's steps (each a list of packed rows); the same on every rank and resume."""
        if epoch not in plans:
            plans.clear()
            plans[epoch] = plan_epoch(
                train_samples,
                batch_tokens=cfg.batch_tokens,
                micro_batch_tokens=cfg.micro_batch_tokens,
                min_steps=cfg.min_steps_per_epoch,
                seed=cfg.seed + epoch,
            )
        return plans[epoch]

    steps_per_epoch = len(plan(0))
    total_steps = steps_per_epoch * cfg.epochs
    last_step = min(total_steps, cfg.max_steps or total_steps)
    warmup = round(cfg.warmup_ratio * total_steps)

    # ---- setup: model (wrapped for several processes), optimizer, schedule, resume
    fsdp = d.world > 1 and (cfg.parallel == "fsdp" or d.launcher_fsdp)
    module = _wrap(
        PackedLoss(
            _load_model(cfg, base_model_dir, weight_dtype),
            cfg.loss_chunk_tokens if cfg.chunked_loss else None,
        ),
        d,
        fsdp,
    )
    optimizer = _make_optimizer(cfg, module, fused=device.type == "cuda" and not fsdp)
    scheduler = LambdaLR(optimizer, _lr_lambda(warmup, total_steps))
    checkpoints = out_dir / "checkpoints"
    state = LoopState()
    latest = d.on_rank_zero("finding the latest checkpoint", lambda: latest_checkpoint(checkpoints))
    if latest is not None:
        state = load_checkpoint(latest, module, optimizer, scheduler, cfg.lora, d)
        if d.is_main:
            log.info("resumed from %s (step %d)", latest, state.step)

    # ---- loop: every rank runs every step on its share of the rows
    while state.step < last_step:
        epoch, index = divmod(state.step, steps_per_epoch)
        rows = plan(epoch)[index]
        tick = time.perf_counter()
        loss_sum = forward_backward(module, rows[d.rank :: d.world], rows, d, autocast)
        trained = [p for p in module.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        loss_tokens = sum(r.n_loss_tokens for r in rows)
        tokens = sum(len(r) for r in rows)
        loss = sum_over_ranks(loss_sum, d) / max(loss_tokens, 1)
        seconds = time.perf_counter() - tick
        record = {
            "step": state.step,
            "epoch": round(state.step / steps_per_epoch, 4),
            "loss": loss,
            "lr": lr,
            "grad_norm": to_float(grad_norm),
            "tokens": tokens,
            "loss_tokens": loss_tokens,
            "tokens_per_s": tokens / seconds,
        }
        state.history.append(record)
        if progress is not None:
            progress({"event": "step", **record})
        every = cfg.checkpoint_every_steps or steps_per_epoch
        due = state.step % every == 0 or state.step == last_step
        if due and cfg.checkpoint_every_steps != 0:
            path = save_checkpoint(
                module,
                optimizer,
                scheduler,
                held_samples,
                cfg,
                state,
                checkpoints,
                fingerprint,
                autocast,
                d,
            )
            if progress is not None:
                progress({"event": "checkpoint", **state.eval_losses[-1], "path": str(path)})

    # ---- save
    final_dir = adapter_dir = None
    if cfg.save_final:
        final_dir, adapter_dir = save_final(module, cfg, base_model_dir, tokenizer, out_dir, d)
    result = PhaseResult(
        out_dir=out_dir,
        final_dir=final_dir,
        adapter_dir=adapter_dir,
        history=state.history,
        eval_losses=state.eval_losses,
        best_checkpoint=best_checkpoint(checkpoints, state.eval_losses),
        tokens_trained=sum(r["tokens"] for r in state.history),
        seconds=time.perf_counter() - started,
        skipped_too_long=too_long,
        skipped_unlabelled=unlabelled,
        steps=state.step,
        steps_per_epoch=steps_per_epoch,
    )
    if d.is_main and cfg.save_final:
        payload = {"fingerprint": fingerprint, "result": result.to_json()}
        (out_dir / _RESULT_FILE).write_text(json.dumps(payload, indent=2))
    d.barrier()
    return result


# --------------------------------------------------------------------------- setup helpers


def _precision(cfg: TrainConfig, on_gpu: bool) -> tuple[torch.dtype, bool]:
    """(weight dtype, bf16 autocast?) for ``cfg.dtype`` on this device."""
    choice = cfg.dtype
    if choice == "auto":
        if not on_gpu:
            return torch.float32, False
        return (torch.bfloat16, True) if cfg.lora else (torch.float32, True)
    return {
        "float32": (torch.float32, False),
        "bfloat16": (torch.bfloat16, False),
        "bf16-mixed": (torch.float32, True),
    }[choice]


def _wrap(module: PackedLoss, d: Dist, fsdp: bool) -> nn.Module:
    """The module as this process trains it: plain, DDP, or sharded with FSDP2."""
    if d.world == 1:
        return module.to(d.device)
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(torch.device(d.device).type, (d.world,))
        for layer in decoder_of(module.model).layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(module, mesh=mesh)  # the rest: embeddings, final norm, lm_head
        return module
    on_gpu = torch.device(d.device).type == "cuda"
    return DistributedDataParallel(
        module.to(d.device), device_ids=[d.local_rank] if on_gpu else None
    )


def _tokenize_all(
    records: Sequence[dict[str, Any]], tokenizer: Any, max_len: int
) -> tuple[list[Tokenized], int, int]:
    """Tokenized samples with trained tokens, plus counts of too-long and unlabelled ones."""
    kept: list[Tokenized] = []
    too_long = unlabelled = 0
    for record in records:
        result = tokenize(record, tokenizer, max_len)
        if isinstance(result, TooLong):
            too_long += 1
        elif result.n_loss_tokens == 0:
            unlabelled += 1
        else:
            kept.append(result)
    return kept, too_long, unlabelled


def _load_model(cfg: TrainConfig, base_model_dir: Path, dtype: torch.dtype) -> nn.Module:
    attn = cfg.attn_implementation
    if attn == "varlen":
        register_varlen_attention()
        attn = VARLEN
    model: Any = AutoModelForCausalLM.from_pretrained(
        base_model_dir, dtype=dtype, attn_implementation=attn
    )
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora:
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_targets),
            task_type="CAUSAL_LM",
        )
        with quiet_peft():
            model = get_peft_model(model, lora)
    if cfg.compile:
        for layer in decoder_of(model).layers:
            layer.compile(dynamic=True)
    model.train()
    return model  # type: ignore[no-any-return]


def _make_optimizer(cfg: TrainConfig, module: nn.Module, fused: bool) -> torch.optim.AdamW:
    decay: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for param in module.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else plain).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused and cfg.fused_optimizer
    )


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup then cosine decay towards 0; no step runs at a learning rate of 0.

    Example: warmup=2, total=6 → factors 0.33, 0.67, 1.0, 0.85, 0.5, 0.15.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        done = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * done))

    return factor


# --------------------------------------------------------------------------- run identity


def _fingerprint(
    cfg: TrainConfig, base: Path, train: Sequence[dict[str, Any]], held: Sequence[dict[str, Any]]
) -> str:
    """Hash of what decides the training trajectory (not max_steps, saving, retention, or how
    the model is spread over processes: a run may resume under another launcher)."""
    settings = asdict(cfg)
    for name in ("max_steps", "save_final", "keep_checkpoints", "parallel"):
        settings.pop(name)
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(str(Path(base).resolve()).encode())
    for records in (train, held):
        digest.update(json.dumps(list(records), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _check_out_dir(out_dir: Path, fingerprint: str, resume: bool) -> PhaseResult | None:
    """Return a finished run's result, refuse a foreign run, or clear out_dir if not resuming."""
    result_file = out_dir / _RESULT_FILE
    checkpoints = list_checkpoints(out_dir / "checkpoints")
    if not resume:
        for name in ("checkpoints", "final", "adapter"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        result_file.unlink(missing_ok=True)
        return None
    found = [json.loads(result_file.read_text())] if result_file.is_file() else []
    found += [json.loads((c / STATE_FILE).read_text()) for c in checkpoints[-1:]]
    for stored in found:
        if stored["fingerprint"] != fingerprint:
            raise UsageError(
                f"{out_dir} holds a run with another config, base model or data; "
                "pass resume=False or use a new out_dir"
            )
        if "state" in stored and stored.get("format") != CHECKPOINT_FORMAT:
            raise UsageError(
                f"{checkpoints[-1]} was written by an older labbot (accelerate save_state); "
                "it cannot be resumed: pass resume=False or use a new out_dir"
            )
    if result_file.is_file():
        return PhaseResult.from_json(found[0]["result"])
    return None
