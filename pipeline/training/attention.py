"""Variable-length attention for padding-free packed rows: every sample of a row attends only to
itself, registered with transformers under :data:`VARLEN`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

VARLEN = "labbot_varlen"


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
