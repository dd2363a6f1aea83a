"""A deterministic stand-in teacher that follows labbot's prompt formats (for the scripted teacher
server).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def scripted(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    """A deterministic stand-in teacher that follows the prompt formats. Questions containing
    'odd' are judged NO by the critic; every fourth generated question repeats another."""
    prompt = messages[-1]["content"]
    if "Reply with YES or NO" in prompt:
        return "NO, it does not." if "odd" in prompt.split("Answer:")[0].lower() else "YES."
    if "Write only the new text" in prompt:
        return (
            "Minutes of the harbour committee. Ana will repaint the buoys by Friday. "
            "Ben checks the nets; no date was set. The chair closed the meeting at noon."
        )
    if 'starting with "Q: "' in prompt:
        n = int(re.search(r"Write (\d+)", prompt).group(1))  # type: ignore[union-attr]
        seed = _h(prompt)
        qs = [f"Q: What is case number {seed % 1000 + i} about units?" for i in range(n)]
        qs[-1] = "Q: An odd request that the critic will refuse?" if n > 1 else qs[-1]
        if n > 2:
            qs[1] = qs[0]  # a duplicate for the dedupe filter
        return "\n".join(qs)
    if "Now answer the next request" in prompt or "Now do the same for this text" in prompt:
        q = prompt.rsplit("Request:", 1)[1].split("\n")[0].strip()
        return f"Answer to: {q}\nRequest: this line must be cut by a stop sequence"
    if "study questions for a textbook chapter" in prompt:
        chunk = prompt.split("New passage:\n---\n", 1)[1].split("\n---", 1)[0]
        sentences = [s for s in re.split(r"(?<=\.)\s+", chunk) if len(s.split()) > 5][:3]
        out = []
        for i, s in enumerate(sentences):
            words = s.split()
            q = f"What does the passage say about {' '.join(words[1:4])}?"
            if i == 1:
                q = "What does an odd passage table show?"
            out.append(f"Q: {q}\nA: {s}")
        return "\n".join(out)
    return ""
