"""Mixing the two phases' datasets from seeds and generated samples (pure, deterministic).

Phase 1 (knowledge) teaches facts: every knowledge question with its passage, loss on the
passage too (``unmask``, as InstructLab's knowledge recipe does), plus the same question without
the passage, loss on the answer only, so the model learns to answer from memory.

Phase 2 (skills) teaches behaviour: skill seeds and generated skill samples, plus a replay share
of phase 1 so the knowledge is not forgotten.

Held-out seed questions (one per knowledge passage, one per skill leaf by default) are kept out
of both phases; evaluation asks them.

>>> split_held_out([("q1", "a1"), ("q2", "a2"), ("q3", "a3")], every=3)
([('q1', 'a1'), ('q2', 'a2')], [('q3', 'a3')])
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from pipeline.taxonomy.leaves import GROUNDED, KNOWLEDGE, Leaf

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MixConfig:
    replay_fraction: float = 0.3  # share of phase-1 records replayed in phase 2
    skill_cap: int = 0  # generated samples per skill leaf (0: all)
    seed: int = 42
    system_prompt: str = "You are a helpful assistant."


@dataclass
class Mix:
    phase1: list[dict[str, Any]] = field(default_factory=list)
    phase2: list[dict[str, Any]] = field(default_factory=list)
    held_out: list[dict[str, Any]] = field(default_factory=list)  # {leaf, kind, question, answer}
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "phase1": len(self.phase1),
            "phase2": len(self.phase2),
            "held_out": len(self.held_out),
            "per_leaf": self.counts,
        }


def split_held_out(items: Sequence[T], every: int) -> tuple[list[T], list[T]]:
    """Every ``every``-th item (counting from 1) is held out."""
    keep = [x for i, x in enumerate(items, start=1) if i % every]
    held = [x for i, x in enumerate(items, start=1) if not i % every]
    return keep, held


def _record(
    system: str, user: str, answer: str, unmask: bool, meta: Mapping[str, Any]
) -> dict[str, Any]:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages, "unmask": unmask, "metadata": dict(meta)}


def held_out_questions(leaf: Leaf) -> list[tuple[str, str, str]]:
    """(question, reference answer, context) pairs evaluation asks for ``leaf``."""
    if leaf.kind == KNOWLEDGE:
        return [(s.qas[-1].question, s.qas[-1].answer, "") for s in leaf.seeds if s.qas]
    last = leaf.seeds[-1]
    return [(last.question, last.answer, last.context or "")]


def mix(
    leaves: Sequence[Leaf],
    generated: Mapping[str, Sequence[dict[str, Any]]],
    cfg: MixConfig,
) -> Mix:
    """Build both phases. ``generated`` maps a leaf path to its kept chat records."""
    rng = random.Random(cfg.seed)
    out = Mix()
    sys_prompt = cfg.system_prompt
    for leaf in leaves:
        counts: Counter[str] = Counter()
        meta = {"leaf": leaf.path, "kind": leaf.kind}
        held = held_out_questions(leaf)
        held_keys = {(q, a) for q, a, _ in held}
        for q, a, ctx in held:
            out.held_out.append(
                {"leaf": leaf.path, "kind": leaf.kind, "question": q, "answer": a, "context": ctx}
            )
        counts["held_out"] = len(held)
        if leaf.kind == KNOWLEDGE:
            for seed in leaf.seeds:
                for qa in seed.qas:
                    if (qa.question, qa.answer) in held_keys:
                        continue
                    out.phase1.append(
                        _record(
                            sys_prompt,
                            f"{seed.context}\n\n{qa.question}",
                            qa.answer,
                            True,
                            {**meta, "source": "seed", "with_context": True},
                        )
                    )
                    out.phase1.append(
                        _record(
                            sys_prompt,
                            qa.question,
                            qa.answer,
                            False,
                            {**meta, "source": "seed", "with_context": False},
                        )
                    )
                    counts["seed"] += 2
            for rec in generated.get(leaf.path, []):
                user, answer = rec["messages"][-2]["content"], rec["messages"][-1]["content"]
                chunk = (rec.get("metadata") or {}).get("chunk") or ""
                if chunk:
                    out.phase1.append(
                        _record(
                            sys_prompt,
                            f"{chunk}\n\n{user}",
                            answer,
                            True,
                            {**meta, "source": "generated", "with_context": True},
                        )
                    )
                out.phase1.append(
                    _record(
                        sys_prompt,
                        user,
                        answer,
                        False,
                        {**meta, "source": "generated", "with_context": False},
                    )
                )
                counts["generated"] += 2 if chunk else 1
        else:
            for seed in leaf.seeds:
                if (seed.question, seed.answer) in held_keys:
                    continue
                user = f"{seed.context}\n\n{seed.question}" if seed.context else seed.question
                out.phase2.append(
                    _record(sys_prompt, user, seed.answer, False, {**meta, "source": "seed"})
                )
                counts["seed"] += 1
            records = list(generated.get(leaf.path, []))
            if cfg.skill_cap and len(records) > cfg.skill_cap:
                records = rng.sample(records, cfg.skill_cap)
            for rec in records:
                msgs = rec["messages"]
                out.phase2.append(
                    _record(
                        sys_prompt,
                        msgs[-2]["content"],
                        msgs[-1]["content"],
                        False,
                        {**meta, "source": "generated"},
                    )
                )
                counts["generated"] += 1
        out.counts[leaf.path] = dict(counts)
    replay_n = round(len(out.phase1) * cfg.replay_fraction)
    if replay_n:
        replay = [dict(r, unmask=False) for r in rng.sample(out.phase1, replay_n)]
        for r in replay:
            r["metadata"] = {**r["metadata"], "replay": True}
        out.phase2.extend(replay)
    rng.shuffle(out.phase1)
    rng.shuffle(out.phase2)
    return out


def config_dict(cfg: MixConfig) -> dict[str, Any]:
    return asdict(cfg)


__all__ = ["GROUNDED", "Mix", "MixConfig", "config_dict", "held_out_questions", "mix"]
