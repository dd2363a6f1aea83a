"""Token counting and the context-window budget every teacher enforces before sending.

A prompt's token count plus ``max_tokens`` must fit the context window. ``max_tokens`` shrinks to
the room left when that is still useful, otherwise the request becomes a :class:`Failure` without
reaching the teacher. This prevents the HTTP 400 "maximum context length" errors that stop
InstructLab's SDG runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from pipeline.sdg.teacher.types import Failure, GenParams, Messages

MIN_COMPLETION_TOKENS = 32
"""A request whose ``max_tokens`` would have to shrink below this fails instead."""

DEFAULT_CONTEXT_WINDOW = 4096
"""Assumed when a server does not say how long its context is (a warning is logged)."""

# Token estimate when no tokenizer is known (see estimate_tokens). The overheads cover role markers
# and the system prompt that some chat templates inject by themselves.
_PIECES = re.compile(r" ?[A-Za-z]+|\s+|[^A-Za-z\s]")
_SAFETY = 1.1
_MESSAGE_OVERHEAD = 8
_TEMPLATE_OVERHEAD = 32


def fit_max_tokens(prompt_tokens: int, params: GenParams, context_window: int) -> int | Failure:
    """The ``max_tokens`` to send so that the prompt plus the answer fit the context window.

    Returns ``params.max_tokens`` when it fits, less when only that much room is left (but at
    least ``MIN_COMPLETION_TOKENS``, or what was asked if that is smaller), else a Failure.
    """
    room = context_window - prompt_tokens
    if params.max_tokens <= room:
        return params.max_tokens
    floor = max(1, min(MIN_COMPLETION_TOKENS, params.max_tokens))
    if room >= floor:
        return room
    return Failure(
        f"prompt of {prompt_tokens} tokens does not fit the teacher's {context_window}-token "
        f"context (at least {floor} tokens must be left for the answer)"
    )


def estimate_text_tokens(text: str) -> int:
    """An upper estimate of a text's BPE tokens, for when the tokenizer is unknown.

    A word of up to five ASCII letters (with its leading space) counts as one token, a longer one
    as one per three letters; every digit, punctuation mark and run of whitespace counts as one;
    a non-ASCII character as its UTF-8 length minus one (CJK 2, emoji 3). Checked against
    SmolLM2's tokenizer, this over-counts English prose and code by about 50% and never
    under-counts digits, tables, JSON, hex, URLs, German, Chinese or emoji; 10% is added on top.
    """
    total = 0
    for match in _PIECES.finditer(text):
        piece = match.group()
        last = piece[-1]
        if last.isascii() and last.isalpha():
            letters = len(piece) - piece.startswith(" ")
            total += 1 if letters <= 5 else math.ceil(letters / 3)
        elif last.isascii():
            total += 1
        else:
            total += max(1, len(last.encode()) - 1)
    return math.ceil(total * _SAFETY)


def estimate_tokens(messages: Messages) -> int:
    """A conservative token count of a chat prompt when the tokenizer is unknown."""
    total = _TEMPLATE_OVERHEAD
    for message in messages:
        total += _MESSAGE_OVERHEAD + estimate_text_tokens(message.get("content", ""))
    return total


TokenCounter = Callable[[Messages], int]
"""A function giving the number of tokens of a chat prompt as the server renders it."""


def chat_template_counter(tokenizer: Any) -> TokenCounter:
    """Exact prompt-token counting with a Hugging Face tokenizer and its chat template."""

    def count(messages: Messages) -> int:
        text = tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(ids)

    return count


def as_counter(tokenizer: object | None) -> TokenCounter | None:
    if tokenizer is None:
        return None
    if hasattr(tokenizer, "apply_chat_template"):
        return chat_template_counter(tokenizer)
    if callable(tokenizer):

        def count(messages: Messages) -> int:
            return int(tokenizer(messages))

        return count
    raise TypeError("tokenizer must be a Hugging Face tokenizer or a function of the messages")
