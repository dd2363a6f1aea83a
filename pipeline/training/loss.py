"""The training loss over packed rows: the chat-template masks, cross-entropy summed over trained
tokens, and the forward/backward step that every rank runs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint

from pipeline.training.attention import VARLEN
from pipeline.training.distributed import Dist
from pipeline.training.packing import IGNORE, PackedRow, Tokenized, pack

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
    out = decoder_of(model)(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=None,
        use_cache=False,
        **kw,
    )
    return out.last_hidden_state  # type: ignore[no-any-return]


def decoder_of(model: Any) -> Any:
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


def row_tensors(row: PackedRow, device: torch.device | str) -> dict[str, torch.Tensor]:
    """A packed row as ``[1, T]`` tensors on ``device``."""
    return {
        "input_ids": torch.tensor([row.input_ids], device=device),
        "position_ids": torch.tensor([row.position_ids], device=device),
        "labels": torch.tensor([row.labels], device=device),
    }


def forward_backward(
    module: nn.Module,
    mine: Sequence[PackedRow],
    step_rows: Sequence[PackedRow],
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
        with _grad_sync(module, i == len(rows) - 1), autocast_context(device, autocast):
            inputs = row_tensors(row, device)
            loss_sum, _ = module(**inputs, **attention_kwargs(row, device, module))
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


def _masked(row: PackedRow) -> PackedRow:
    return PackedRow(row.input_ids, [IGNORE] * len(row), row.position_ids, row.boundaries, [])


def evaluate_loss(
    module: nn.Module,
    samples: Sequence[Tokenized],
    micro_batch_tokens: int,
    d: Dist,
    autocast: bool = False,
) -> float | None:
    """Mean loss per trained token over ``samples`` (None when there are none), in eval mode;
    the module is left in the mode it was in."""
    if not samples:
        return None
    device = torch.device(d.device)
    rows = pack(samples, micro_batch_tokens)
    mine = rows[d.rank :: d.world]
    mine += [_masked(rows[0])] * (math.ceil(len(rows) / d.world) - len(mine))
    training = module.training
    module.eval()
    total = torch.zeros((), device=device)
    with torch.no_grad(), autocast_context(device, autocast):
        for row in mine:
            inputs = row_tensors(row, device)
            loss_sum, _ = module(**inputs, **attention_kwargs(row, device, module))
            total += loss_sum.float()
    module.train(training)
    tokens = sum(r.n_loss_tokens for r in rows)
    return sum_over_ranks(total, d) / max(tokens, 1)


def sum_over_ranks(value: torch.Tensor, d: Dist) -> float:
    if d.world > 1:
        value = value.detach().clone()
        tdist.all_reduce(value)
    return float(value)


def to_float(value: torch.Tensor) -> float:
    """A float from a tensor that may be a DTensor (FSDP's gradient norm)."""
    if isinstance(value, DTensor):
        value = value.full_tensor()
    return float(value)


def unwrap(module: nn.Module) -> PackedLoss:
    inner = getattr(module, "module", module)
    inner = getattr(inner, "_orig_mod", inner)
    assert isinstance(inner, PackedLoss)
    return inner


def attention_kwargs(row: PackedRow, device: torch.device, module: nn.Module) -> dict[str, Any]:
    """Extra forward arguments: cumulative lengths for the varlen attention kernel."""
    config = unwrap(module).model.config
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


def autocast_context(device: torch.device, enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
