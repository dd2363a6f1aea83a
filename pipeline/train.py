"""Training one phase: LoRA or full fine-tuning of a causal LM on packed chat samples.

``train_phase`` reads top to bottom: setup (model, tokenizer, data, optimizer) → one loop
(accumulate micro-batches, clip, step, log, checkpoint) → one save. Both LAB phases call it with
different :class:`TrainConfig` values. It is the only module that imports peft.

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

import contextlib
import hashlib
import json
import logging
import math
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as tdist
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.checkpoint import checkpoint
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    set_seed,
)

from pipeline import distributed
from pipeline.data import IGNORE, Batch, Tokenized, TooLong, pack, plan_epoch, tokenize
from pipeline.distributed import Dist
from pipeline.errors import UsageError

log = logging.getLogger(__name__)

Dtype = Literal["auto", "float32", "bfloat16", "bf16-mixed"]
Parallel = Literal["ddp", "fsdp"]
VARLEN = "labbot_varlen"
_STATE_FILE = "trainer_state.json"
_RESULT_FILE = "result.json"
_CHECKPOINT_FORMAT = 2  # 2: torch.distributed.checkpoint (1 was accelerate's save_state)


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


@dataclass
class _State:
    """Loop position and logs: saved in every checkpoint, restored on resume."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_losses: list[dict[str, Any]] = field(default_factory=list)


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

    plans: dict[int, list[list[Batch]]] = {}

    def plan(epoch: int) -> list[list[Batch]]:
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
    state = _State()
    latest = d.on_rank_zero("finding the latest checkpoint", lambda: _latest(checkpoints))
    if latest is not None:
        state = _load_checkpoint(latest, module, optimizer, scheduler, cfg.lora, d)
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
        loss = _sum_over_ranks(loss_sum, d) / max(loss_tokens, 1)
        seconds = time.perf_counter() - tick
        record = {
            "step": state.step,
            "epoch": round(state.step / steps_per_epoch, 4),
            "loss": loss,
            "lr": lr,
            "grad_norm": _scalar(grad_norm),
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
            path = _save_checkpoint(
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
        final_dir, adapter_dir = _save_final(module, cfg, base_model_dir, tokenizer, out_dir, d)
    result = PhaseResult(
        out_dir=out_dir,
        final_dir=final_dir,
        adapter_dir=adapter_dir,
        history=state.history,
        eval_losses=state.eval_losses,
        best_checkpoint=_best(checkpoints, state.eval_losses),
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


# --------------------------------------------------------------------------- the loss


class PackedLoss(nn.Module):
    """A causal LM whose forward returns ``(summed loss, trained tokens)`` for packed rows.

    Wrapping the model this way keeps the whole loss inside one module forward, which DDP and
    FSDP need, and lets the loss skip logits at untrained positions.
    """

    def __init__(self, model: nn.Module, chunk_tokens: int | None) -> None:
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, labels: torch.Tensor, **kw: Any
    ) -> tuple[torch.Tensor, int]:
        targets = labels[:, 1:].reshape(-1)
        keep = (targets != IGNORE).nonzero().squeeze(1)
        if self.chunk_tokens is None:
            logits = self.model(
                input_ids=input_ids,
                position_ids=position_ids,
                attention_mask=None,
                use_cache=False,  # packed rows need it: see hidden_states()
                logits_to_keep=keep,
                **kw,
            ).logits[0]
            return _cross_entropy(logits, targets[keep], keep.numel())
        hidden = hidden_states(self.model, input_ids, position_ids, **kw)
        head = _head(self.model)
        picked = hidden[0, :-1].index_select(0, keep)
        if keep.numel() == 0:  # keep every parameter in the graph (DDP/FSDP need that)
            return head(hidden[0, :1]).float().sum() * 0.0, 0
        config = self.model.config
        if keep.numel() <= self.chunk_tokens:  # one chunk: nothing to gain from recomputing it
            return _head_loss(head, picked, targets[keep], config), keep.numel()
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, keep.numel(), self.chunk_tokens):
            stop = start + self.chunk_tokens
            part = checkpoint(
                _head_loss,
                head,
                picked[start:stop],
                targets[keep[start:stop]],
                config,
                use_reentrant=False,
            )
            total = total + part
        return total, keep.numel()


def hidden_states(
    model: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor, **kw: Any
) -> torch.Tensor:
    """Last hidden states of a packed row (``[1, T]`` ids, positions restarting per sample).

    ``use_cache=False`` is what makes packing correct: transformers only builds the
    block-diagonal mask from ``position_ids`` when no KV cache exists, and a model in train mode
    creates one unless told not to; without it, packed samples silently attend to each other.
    """
    out = _decoder(model)(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=None,
        use_cache=False,
        **kw,
    )
    return out.last_hidden_state  # type: ignore[no-any-return]


def _decoder(model: Any) -> Any:
    """The decoder stack (embeddings + layers + final norm), through peft wrappers too."""
    return model.get_decoder()


def _head(model: Any) -> nn.Module:
    """The output projection (``lm_head``)."""
    head = model.get_output_embeddings()
    assert isinstance(head, nn.Module)
    return head


def _head_loss(
    head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, config: Any
) -> torch.Tensor:
    logits = head(hidden).float()
    scaling = getattr(config, "logits_scaling", None)  # Granite
    if scaling:
        logits = logits / scaling
    softcap = getattr(config, "final_logit_softcapping", None)  # Gemma 2
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return nn.functional.cross_entropy(logits, targets, reduction="sum")


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor, n: int) -> tuple[torch.Tensor, int]:
    if n == 0:
        return logits.float().sum() * 0.0, 0
    return nn.functional.cross_entropy(logits.float(), targets, reduction="sum"), n


def row_tensors(row: Batch, device: torch.device | str) -> dict[str, torch.Tensor]:
    """A packed row as ``[1, T]`` tensors on ``device``."""
    return {
        "input_ids": torch.tensor([row.input_ids], device=device),
        "position_ids": torch.tensor([row.position_ids], device=device),
        "labels": torch.tensor([row.labels], device=device),
    }


def _attn_kwargs(row: Batch, device: torch.device, module: nn.Module) -> dict[str, Any]:
    """Extra forward arguments: cumulative lengths for the varlen attention kernel."""
    config = _unwrap(module).model.config
    if getattr(config, "_attn_implementation", None) != VARLEN:
        return {}
    cu = torch.tensor(row.boundaries, dtype=torch.int32, device=device)
    longest = max(row.seq_lens)
    return {
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def forward_backward(
    module: nn.Module,
    mine: Sequence[Batch],
    step_rows: Sequence[Batch],
    d: Dist,
    autocast: bool,
) -> torch.Tensor:
    """Forward and backward this rank's rows of one step; return its summed (detached) loss.

    Each row's summed loss is divided by the trained-token count of the whole step (all rows,
    all ranks: every rank knows it from the shared plan, no all-reduce needed) and multiplied by
    ``d.world`` because DDP and FSDP average gradients over ranks. Ranks with fewer rows run an
    all-masked copy so that every rank makes the same number of calls (collectives pair up).
    """
    device = torch.device(d.device)
    step_tokens = max(1, sum(r.n_loss_tokens for r in step_rows))
    per_rank = math.ceil(len(step_rows) / d.world)
    rows = list(mine) + [_masked(step_rows[0])] * (per_rank - len(mine))
    total = torch.zeros((), device=device)
    for i, row in enumerate(rows):
        with _grad_sync(module, i == len(rows) - 1), _autocast(device, autocast):
            inputs = row_tensors(row, device)
            loss_sum, _ = module(**inputs, **_attn_kwargs(row, device, module))
            (loss_sum * (d.world / step_tokens)).backward()
        total += loss_sum.detach()
    return total


def _grad_sync(module: nn.Module, last: bool) -> Any:
    """DDP: all-reduce gradients only after the step's last row. FSDP reduce-scatters after
    every row (its gradients stay sharded: accumulating unsharded ones would cost the memory
    FSDP is there to save); one process has nothing to synchronise."""
    if isinstance(module, DistributedDataParallel) and not last:
        return module.no_sync()
    return contextlib.nullcontext()


def _masked(row: Batch) -> Batch:
    return Batch(row.input_ids, [IGNORE] * len(row), row.position_ids, row.boundaries, [])


def evaluate_loss(
    module: nn.Module,
    samples: Sequence[Tokenized],
    micro_batch_tokens: int,
    d: Dist,
    autocast: bool = False,
) -> float | None:
    """Mean loss per trained token over ``samples`` (None when there are none)."""
    if not samples:
        return None
    device = torch.device(d.device)
    rows = pack(samples, micro_batch_tokens)
    mine = rows[d.rank :: d.world]
    mine += [_masked(rows[0])] * (math.ceil(len(rows) / d.world) - len(mine))
    module.eval()
    total = torch.zeros((), device=device)
    with torch.no_grad(), _autocast(device, autocast):
        for row in mine:
            inputs = row_tensors(row, device)
            loss_sum, _ = module(**inputs, **_attn_kwargs(row, device, module))
            total += loss_sum.float()
    module.train()
    tokens = sum(r.n_loss_tokens for r in rows)
    return _sum_over_ranks(total, d) / max(tokens, 1)


def _sum_over_ranks(value: torch.Tensor, d: Dist) -> float:
    if d.world > 1:
        value = value.detach().clone()
        tdist.all_reduce(value)
    return float(value)


def _scalar(value: torch.Tensor) -> float:
    """A float from a tensor that may be a DTensor (FSDP's gradient norm)."""
    if isinstance(value, DTensor):
        value = value.full_tensor()
    return float(value)


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


def _autocast(device: torch.device, enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _wrap(module: PackedLoss, d: Dist, fsdp: bool) -> nn.Module:
    """The module as this process trains it: plain, DDP, or sharded with FSDP2."""
    if d.world == 1:
        return module.to(d.device)
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(torch.device(d.device).type, (d.world,))
        for layer in _decoder(module.model).layers:
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


def register_varlen_attention() -> None:
    """Make ``attn_implementation="labbot_varlen"`` available to transformers models."""
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN, varlen_attention)


def varlen_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed sample, from ``cu_seq_lens_q`` (no mask tensor).

    Shapes follow transformers: ``query`` is ``[1, heads, T, dim]`` and the output
    ``[1, T, heads, dim]``. On CUDA this is one flash-attention varlen call; elsewhere an exact
    per-sample reference (for tests).
    """
    cu = kwargs["cu_seq_lens_q"]
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [T, H, D]
    if q.is_cuda:
        from torch.nn.attention.varlen import varlen_attn

        original = q.dtype
        if original not in (torch.float16, torch.bfloat16):  # rotary may upcast under autocast
            half = (
                torch.get_autocast_dtype("cuda")
                if torch.is_autocast_enabled("cuda")
                else torch.bfloat16
            )
            q, k, v = q.to(half), k.to(half), v.to(half)

        longest = int(kwargs["max_length_q"])
        out = varlen_attn(
            q,
            k,
            v,
            cu,
            cu,
            longest,
            longest,
            scale=scaling,
            window_size=(-1, 0),
            enable_gqa=q.shape[1] != k.shape[1],
        )
        assert isinstance(out, torch.Tensor)
        out = out.to(original)
    else:
        parts = []
        bounds = [int(x) for x in cu.tolist()]
        for a, b in zip(bounds, bounds[1:], strict=False):
            part = nn.functional.scaled_dot_product_attention(
                q[a:b].transpose(0, 1),
                k[a:b].transpose(0, 1),
                v[a:b].transpose(0, 1),
                is_causal=True,
                scale=scaling,
                enable_gqa=True,
            )
            parts.append(part.transpose(0, 1))
        out = torch.cat(parts)
    return out.unsqueeze(0), None


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
        with _quiet_peft():
            model = get_peft_model(model, lora)
    if cfg.compile:
        for layer in _decoder(model).layers:
            layer.compile(dynamic=True)
    model.train()
    return model  # type: ignore[no-any-return]


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft 0.21 reads transformers 5's deprecated ``is_gradient_checkpointing`` (a warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".is_gradient_checkpointing. is deprecated", category=FutureWarning
        )
        yield


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


def _unwrap(module: nn.Module) -> PackedLoss:
    inner = getattr(module, "module", module)
    inner = getattr(inner, "_orig_mod", inner)
    assert isinstance(inner, PackedLoss)
    return inner


# --------------------------------------------------------------------------- checkpoints


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
    checkpoints = _checkpoints(out_dir / "checkpoints")
    if not resume:
        for name in ("checkpoints", "final", "adapter"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        result_file.unlink(missing_ok=True)
        return None
    found = [json.loads(result_file.read_text())] if result_file.is_file() else []
    found += [json.loads((c / _STATE_FILE).read_text()) for c in checkpoints[-1:]]
    for stored in found:
        if stored["fingerprint"] != fingerprint:
            raise UsageError(
                f"{out_dir} holds a run with another config, base model or data; "
                "pass resume=False or use a new out_dir"
            )
        if "state" in stored and stored.get("format") != _CHECKPOINT_FORMAT:
            raise UsageError(
                f"{checkpoints[-1]} was written by an older labbot (accelerate save_state); "
                "it cannot be resumed: pass resume=False or use a new out_dir"
            )
    if result_file.is_file():
        return PhaseResult.from_json(found[0]["result"])
    return None


def _checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("step-*") if (p / _STATE_FILE).is_file())


def _latest(directory: Path) -> Path | None:
    existing = _checkpoints(directory)
    return existing[-1] if existing else None


def _save_checkpoint(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    held: Sequence[Tokenized],
    cfg: TrainConfig,
    state: _State,
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
        payload = {"fingerprint": fingerprint, "format": _CHECKPOINT_FORMAT, "state": asdict(state)}
        (staging / _STATE_FILE).write_text(json.dumps(payload, indent=2))
        shutil.rmtree(path, ignore_errors=True)
        staging.rename(path)
        _prune(directory, state.eval_losses, cfg.keep_checkpoints)
    d.barrier()
    return path


def _load_checkpoint(
    path: Path,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    lora: bool,
    d: Dist,
) -> _State:
    """Restore what :func:`_save_checkpoint` wrote, on any number of processes (DCP reshards).

    A rank without its own RNG file (more processes than when saved) keeps its seeded RNG: the
    data plan does not depend on the number of processes, dropout masks do.
    """
    stored = json.loads((path / _STATE_FILE).read_text())
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
    return _State(**stored["state"])


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


def _prune(directory: Path, eval_losses: list[dict[str, Any]], keep: int) -> None:
    """Keep the newest checkpoint and the best by held-out loss, up to ``keep`` in all."""
    existing = _checkpoints(directory)
    keep_set = {existing[-1]}
    best = _best(directory, eval_losses)
    if best is not None and len(keep_set) < keep:
        keep_set.add(best)
    for path in reversed(existing):
        if len(keep_set) >= keep:
            break
        keep_set.add(path)
    for path in existing:
        if path not in keep_set:
            shutil.rmtree(path)


def _best(directory: Path, eval_losses: list[dict[str, Any]]) -> Path | None:
    """The existing checkpoint with the lowest held-out loss (the newest if none was scored)."""
    existing = {p.name: p for p in _checkpoints(directory)}
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
        peft_model = _unwrap(module).model
        assert isinstance(peft_model, PeftModel)
        peft_model.save_pretrained(str(target), state_dict=state)


def _save_final(
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
            with _quiet_peft():
                merged: Any = PeftModel.from_pretrained(base, staging / "adapter")
            merged = merged.merge_and_unload()
            merged.to(dtype=dtype)
            merged.save_pretrained(staging / "final")
        else:
            model = _unwrap(module).model
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
