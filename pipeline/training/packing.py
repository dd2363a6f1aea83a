"""Training data prep: chat-template tokenisation with loss masks, padding-free packing, collation.

Everything here is pure Python over lists of token ids; the only outside type is the tokenizer.
The training loop (``pipeline/training/loop.py``) turns the rows built here into tensors.

Conventions (the Hugging Face ones):

* ``labels[i]`` is the token the model should produce at position ``i``; the model (or our loss)
  shifts by one, so the logits at ``i - 1`` are scored against ``labels[i]``.
* ``-100`` (:data:`IGNORE`) marks a position that is not trained.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.errors import BuildError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100
"""Label value for positions without loss (role headers, system prompts, masked users, padding)."""


class ChatTemplateError(BuildError):
    """The student's tokenizer cannot render a sample in a way we can find the trained spans in."""


@dataclass(frozen=True)
class Tokenized:
    """One chat sample as token ids plus labels (``IGNORE`` where nothing is trained)."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_loss_tokens(self) -> int:
        """How many positions carry a label."""
        return sum(1 for label in self.labels if label != IGNORE)


@dataclass(frozen=True)
class TooLong:
    """A sample that does not fit ``max_len``: reported so the caller can count it, never cut."""

    length: int
    max_len: int


@dataclass(frozen=True)
class PackedRow:
    """One packed row: several samples laid end to end, attending only within themselves.

    ``boundaries`` are cumulative offsets (``cu_seqlens``): sample ``k`` spans
    ``boundaries[k]:boundaries[k + 1]``. ``position_ids`` restart at 0 at each boundary, which is
    what tells the model (with ``attention_mask=None``) to build a block-diagonal causal mask.
    ``sample_ids`` are the indices of the packed samples in the list given to :func:`pack`.
    """

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    boundaries: list[int]
    sample_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_loss_tokens(self) -> int:
        """Positions that contribute to the loss (the first position of a row never does)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE)

    @property
    def seq_lens(self) -> list[int]:
        """Length of each packed sample, in row order."""
        return [b - a for a, b in zip(self.boundaries, self.boundaries[1:], strict=False)]


@dataclass(frozen=True)
class Padded:
    """Samples padded (right side) to the longest one, for frameworks that need a rectangle."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    attention_mask: list[list[int]]


# --------------------------------------------------------------------------- tokenisation


def tokenize(
    sample: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, max_len: int
) -> Tokenized | TooLong:
    """Render ``sample`` with the student's chat template and label the trained spans.

    ``unmask=False`` trains assistant turns only; ``unmask=True`` trains every turn except
    system ones (InstructLab's knowledge phase). A trained assistant turn also trains the
    template's end-of-turn token that follows it, so the model learns to stop.

    The spans are found by rendering the conversation one message longer at a time: message
    ``k`` is the text that ``messages[:k + 1]`` adds to ``messages[:k]``, and its content is the
    last occurrence of the content string in that piece. Token offsets from the fast tokenizer
    then map characters to tokens: a token is trained when it starts inside the content (a token
    that merges a header's newline with leading spaces of the content stays masked). A template
    that rewrites earlier turns, or the content itself, raises :class:`ChatTemplateError`
    instead of producing a silently wrong mask.

    Example (SmolLM2's ChatML template; ``|`` separates tokens, ``_`` marks ``IGNORE``)::

        {"messages": [{"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}], "unmask": False}
        input_ids: <|im_start|>|system|\\n|You| ...|<|im_end|>|\\n|<|im_start|>|user|\\n|Hi|
                   <|im_end|>|\\n|<|im_start|>|assistant|\\n|Hello|!|<|im_end|>|\\n
        labels:    _ ... _ |Hello|!|<|im_end|>|_

    Args:
        sample: ``{"messages": [{"role", "content"}, ...], "unmask": bool, ...}``.
        tokenizer: the student's fast tokenizer, with a chat template.
        max_len: longest allowed sample in tokens.

    Returns:
        :class:`Tokenized`, or :class:`TooLong` when the rendered sample exceeds ``max_len``.

    Raises:
        ChatTemplateError: no chat template, a slow tokenizer, or a template whose output
            cannot be split into messages.
    """
    messages = list(sample["messages"])
    if not messages:
        raise ChatTemplateError("a sample has no messages")
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError("the student's tokenizer has no chat template")
    if not tokenizer.is_fast:
        raise ChatTemplateError("a fast tokenizer (with offset mapping) is required")
    unmask = bool(sample.get("unmask", False))

    renders = [""]
    for k in range(1, len(messages) + 1):
        text = tokenizer.apply_chat_template(messages[:k], tokenize=False)
        if not isinstance(text, str) or not text.startswith(renders[-1]):
            raise ChatTemplateError(
                "the chat template renders earlier turns differently once a later turn is added; "
                "cannot locate the trained spans"
            )
        renders.append(text)
    full = renders[-1]

    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoded["input_ids"])
    offsets: list[tuple[int, int]] = [(int(a), int(b)) for a, b in encoded["offset_mapping"]]
    if len(ids) > max_len:
        return TooLong(length=len(ids), max_len=max_len)

    stop_ids = set(tokenizer.all_special_ids)
    if tokenizer.eos_token_id is not None:
        stop_ids.add(int(tokenizer.eos_token_id))
    labels = [IGNORE] * len(ids)
    for k, message in enumerate(messages):
        role = message["role"]
        trained = role == "assistant" or (unmask and role != "system")
        content = message["content"]
        if not isinstance(content, str):
            raise ChatTemplateError(f"message {k} content is not a string")
        if not trained or not content:
            continue
        seg_start, seg_end = len(renders[k]), len(renders[k + 1])
        start, end = _locate(full, seg_start, seg_end, content, k)
        chosen = [i for i, (a, b) in enumerate(offsets) if b > a and start <= a < end]
        if not chosen:
            continue
        for i in chosen:
            labels[i] = ids[i]
        if role == "assistant":
            # Also train what closes the turn, up to and including the first special token.
            for i in range(chosen[-1] + 1, len(ids)):
                if offsets[i][0] >= seg_end:
                    break
                labels[i] = ids[i]
                if ids[i] in stop_ids:
                    break
    return Tokenized(input_ids=ids, labels=labels)


def _locate(full: str, seg_start: int, seg_end: int, content: str, k: int) -> tuple[int, int]:
    """Character span of message ``k``'s content inside its rendered piece of ``full``."""
    piece = full[seg_start:seg_end]
    for candidate in (content, content.strip()):
        if candidate:
            at = piece.rfind(candidate)
            if at >= 0:
                return seg_start + at, seg_start + at + len(candidate)
    raise ChatTemplateError(f"message {k}: the chat template does not reproduce its content")


# --------------------------------------------------------------------------- packing


def pack(samples: Sequence[Tokenized], max_tokens: int, *, seed: int = 0) -> list[PackedRow]:
    """Pack samples into rows of at most ``max_tokens`` tokens (best-fit decreasing).

    Longest samples are placed first, each into the fullest row that still has room. The rows'
    contents do not depend on ``seed``; their order is shuffled by it (use ``seed + epoch``).
    Each sample appears in exactly one row. Each sample's first label is masked, so the last
    token of one sample is never trained to predict the first token of the next.

    Example (``max_tokens=6``; lengths 4, 3, 2, 2 → rows of 6 and 5)::

        pack([a(4), b(3), c(2), d(2)], 6)
        → [PackedRow(sample_ids=[0, 2], position_ids=[0, 1, 2, 3, 0, 1], boundaries=[0, 4, 6]),
           PackedRow(sample_ids=[1, 3], position_ids=[0, 1, 2, 0, 1], boundaries=[0, 3, 5])]
           (in an order set by ``seed``)

    Raises:
        ValueError: a sample is empty or longer than ``max_tokens``.
    """
    order = sorted(range(len(samples)), key=lambda i: (-len(samples[i]), i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted
    for i in order:
        size = len(samples[i])
        if size == 0 or size > max_tokens:
            raise ValueError(f"sample {i} has {size} tokens; rows hold 1 to {max_tokens}")
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            room, row = free.pop(at)
            rows[row].append(i)
        else:
            room, row = max_tokens, len(rows)
            rows.append([i])
        bisect.insort(free, (room - size, row))
    random.Random(seed).shuffle(rows)
    return [_build_row(samples, sorted(row)) for row in rows]


def _build_row(samples: Sequence[Tokenized], sample_ids: list[int]) -> PackedRow:
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    boundaries = [0]
    for i in sample_ids:
        sample = samples[i]
        input_ids.extend(sample.input_ids)
        labels.append(IGNORE)
        labels.extend(sample.labels[1:])
        position_ids.extend(range(len(sample)))
        boundaries.append(len(input_ids))
    return PackedRow(input_ids, labels, position_ids, boundaries, list(sample_ids))


def plan_epoch(
    samples: Sequence[Tokenized],
    *,
    batch_tokens: int,
    micro_batch_tokens: int,
    min_steps: int,
    seed: int,
) -> list[list[PackedRow]]:
    """Pack one epoch and group its rows into optimizer steps.

    The step count is ``ceil(total_tokens / batch_tokens)`` but at least ``min_steps`` (and at
    most one per sample), so a tiny dataset still gets several optimizer steps: the row size
    shrinks to ``total_tokens / steps`` (never below the longest sample) and rows are split into
    steps of about equal token counts. The plan depends only on the samples, sizes and seed, so
    every epoch of a run has the same number of steps and a resumed run can skip to its place.

    Example: 6 samples of 100 tokens, ``batch_tokens=4096, micro_batch_tokens=1024,
    min_steps=4`` → 4 steps instead of 1: rows of at most 150 tokens (one sample each),
    grouped as steps of 2, 1, 2, 1 rows.
    """
    if not samples:
        return []
    total = sum(len(s) for s in samples)
    longest = max(len(s) for s in samples)
    target = min(len(samples), max(min_steps, math.ceil(total / batch_tokens)))
    capacity = max(longest, min(micro_batch_tokens, math.ceil(total / target)))
    rows = pack(samples, capacity, seed=seed)
    return split_steps(rows, min(target, len(rows)))


def split_steps(rows: Sequence[PackedRow], n_steps: int) -> list[list[PackedRow]]:
    """Split rows, in order, into ``n_steps`` non-empty groups of about equal token counts.

    A step ends where stopping undershoots its share less than taking the next row would overshoot.

    Example: rows of 5, 5, 5, 5, 4 tokens into 2 steps → ``[[5, 5], [5, 5, 4]]`` (10 and 14
    tokens against a target of 12).
    """
    if not 1 <= n_steps <= len(rows):
        raise ValueError(f"cannot split {len(rows)} rows into {n_steps} steps")
    total = sum(len(r) for r in rows)
    groups: list[list[PackedRow]] = []
    current: list[PackedRow] = []
    done = 0
    for i, row in enumerate(rows):
        current.append(row)
        done += len(row)
        rows_left = len(rows) - i - 1
        groups_left = n_steps - len(groups) - 1
        if groups_left == 0:
            continue
        target = total * (len(groups) + 1) / n_steps
        nxt = len(rows[i + 1]) if rows_left else 0
        if rows_left == groups_left or (done + nxt / 2 > target and rows_left >= groups_left):
            groups.append(current)
            current = []
    groups.append(current)
    return groups


def pad_collate(samples: Sequence[Tokenized], pad_id: int) -> Padded:
    """Pad samples on the right to the longest one (labels with ``IGNORE``, mask with 0).

    Example: lengths 3 and 1 with ``pad_id=0`` →
    ``input_ids=[[a, b, c], [d, 0, 0]]``, ``attention_mask=[[1, 1, 1], [1, 0, 0]]``.
    """
    width = max((len(s) for s in samples), default=0)
    ids, labels, mask = [], [], []
    for s in samples:
        gap = width - len(s)
        ids.append(s.input_ids + [pad_id] * gap)
        labels.append(s.labels + [IGNORE] * gap)
        mask.append([1] * len(s) + [0] * gap)
    return Padded(ids, labels, mask)
