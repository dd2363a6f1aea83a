"""Splitting a Markdown document into passages that fit the teacher's context window.

Pure functions over text. Paragraphs are kept whole where possible; a heading travels with
the paragraphs under it; an over-long paragraph is split between sentences.

>>> chunk_markdown("# A\\n\\none two three\\n\\nfour five", max_words=5)
['# A\\n\\none two three', 'four five']
"""

from __future__ import annotations

import re

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _words(text: str) -> int:
    return len(text.split())


def _split_long(paragraph: str, max_words: int) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        if current and _words(" ".join(current + [sentence])) > max_words:
            pieces.append(" ".join(current))
            current = []
        if _words(sentence) > max_words:  # one huge sentence: cut by words
            words = sentence.split()
            for i in range(0, len(words), max_words):
                pieces.append(" ".join(words[i : i + max_words]))
            continue
        current.append(sentence)
    if current:
        pieces.append(" ".join(current))
    return pieces


def _is_heading(block: str) -> bool:
    return block.lstrip().startswith("#") and "\n" not in block.strip()


def chunk_markdown(text: str, max_words: int) -> list[str]:
    """Passages of at most ``max_words`` words, in document order."""
    if max_words < 1:
        raise ValueError("max_words must be positive")
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if b.strip()]
    parts = [
        p for b in blocks for p in ([b] if _words(b) <= max_words else _split_long(b, max_words))
    ]
    chunks: list[str] = []
    current: list[str] = []
    for part in parts:
        if current and _words("\n\n".join([*current, part])) > max_words:
            carry = [current.pop()] if len(current) > 1 and _is_heading(current[-1]) else []
            chunks.append("\n\n".join(current))
            current = carry
        current.append(part)
    if current:
        chunks.append("\n\n".join(current))
    return chunks
