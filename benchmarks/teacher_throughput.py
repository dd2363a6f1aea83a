"""How busy does OpenAITeacher keep a teacher server? (the SDG issue's "at least 90% busy" target)

A scripted OpenAI-compatible server with C slots and a fixed latency per request can answer at
most C / latency requests per second. This pushes N SDG-sized chat requests through
``OpenAITeacher(concurrency=C)`` and prints the achieved rate against that ideal, the teacher's
utilisation (busy slot-seconds over available slot-seconds, measured by the server) and the
tokens per request. It prints; it does not assert.

    .venv/bin/python benchmarks/teacher_throughput.py [--requests 120] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.sdg.teacher import Completion, GenParams, OpenAITeacher  # noqa: E402
from tests.support.teacher_server import ScriptedTeacherServer  # noqa: E402

VOCABULARY = (
    "the river city bridge was founded in year its population grew after railway arrived "
    "question answer document passage knowledge skill teacher student model tokens"
).split()


def prompt(rng: random.Random) -> list[dict[str, str]]:
    """A knowledge-generation-like prompt: instructions plus a document chunk (~300 words)."""
    chunk = " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(200, 400)))
    return [
        {"role": "system", "content": "You are a careful teacher writing training data."},
        {
            "role": "user",
            "content": "Read the passage and write three question and answer pairs.\n\n"
            f"[DOCUMENT]\n{chunk}\n[END]",
        },
    ]


def answer(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    words = messages[-1]["content"].split()
    return " ".join(words[i % len(words)] for i in range(120))


def run(concurrency: int, server_slots: int, requests: int, latency: float) -> None:
    rng = random.Random(concurrency * 1000 + server_slots)
    prompts = [prompt(rng) for _ in range(requests)]
    with (
        ScriptedTeacherServer(
            answer, latency=latency, concurrency=server_slots, n_ctx=4096
        ) as server,
        OpenAITeacher(server.url, concurrency=concurrency) as teacher,
    ):
        started = time.monotonic()
        results = teacher.chat(prompts, GenParams(max_tokens=512))
        wall = time.monotonic() - started
        done = [r for r in results if isinstance(r, Completion)]
        ideal = server_slots / latency
        rate = len(done) / wall
        stats = teacher.stats.as_dict()
        client_busy = float(stats["busy_seconds"]) / (wall * concurrency)
        print(
            f"client C={concurrency:<2} server slots={server_slots:<2} "
            f"{len(done):>4}/{requests} ok in {wall:5.2f} s: {rate:6.1f} req/s "
            f"(ideal {ideal:5.1f}, {rate / ideal:6.1%}); "
            f"teacher busy {server.utilisation():6.1%} (server), {client_busy:6.1%} (client); "
            f"max in flight {server.max_in_flight}; tokens/request "
            f"{int(stats['prompt_tokens']) / len(done):.0f} in + "
            f"{int(stats['completion_tokens']) / len(done):.0f} out; "
            f"overflows {server.overflows}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=120, help="requests per run")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per request")
    args = parser.parse_args()
    print(
        f"{args.requests} requests per run, {args.latency} s per request on the server; "
        "target: teacher busy >= 90%"
    )
    for concurrency in (4, 8):
        run(concurrency, concurrency, args.requests, args.latency)
    # Mismatches: a client that under-uses the server, and one that queues on it.
    run(2, 4, args.requests // 2, args.latency)
    run(8, 4, args.requests, args.latency)


if __name__ == "__main__":
    main()
