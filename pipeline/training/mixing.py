"""Mixing the two phases' datasets from seeds and generated samples (pure, deterministic).

Phase 1 (knowledge) teaches facts: every knowledge question with its passage, loss on the
passage too (``unmask``, as InstructLab's knowledge recipe does), plus the same question without
the passage, loss on the answer only, so the model learns to answer from memory.

Phase 2 (skills) teaches behaviour: skill seeds and generated skill samples, plus a replay share
of phase 1 so the knowledge is not forgotten.

Held-out seed questions (one per knowledge passage, one per skill leaf by default) are kept out
of both phases; evaluation asks them. So are their near-copies: a seed or generated sample of any
leaf whose question near-duplicates a held-out question (3-word shingle Jaccard at least
``MixConfig.leak_threshold``, :func:`pipeline.taxonomy.overlap.leaked_samples`) is dropped and
counted per leaf (``dropped_held_out``), so evaluation never asks what training showed.

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
from pipeline.taxonomy.overlap import leaked_samples

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MixConfig:
    replay_fraction: float = 0.3  # share of phase-1 records replayed in phase 2
    skill_cap: int = 0  # generated samples per skill leaf (0: all)
    seed: int = 42
    system_prompt: str = "You are a helpful assistant."
    #: A training sample whose question is this close to a held-out one is dropped.
    leak_threshold: float = 0.6


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
            "dropped_held_out": sum(c.get("dropped_held_out", 0) for c in self.counts.values()),
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


@dataclass
class _Pending:
    """Records waiting for the leak check: each with the question it asks."""

    phase1: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    phase2: list[tuple[dict[str, Any], str]] = field(default_factory=list)


def _question(user: str, kind: str) -> str:
    """The question of a generated record's user turn (a grounded skill's turn is its context,
    a blank line, then the question)."""
    return user.rsplit("\n\n", 1)[-1] if kind == GROUNDED else user


def _drop_leaks(out: Mix, pending: _Pending, threshold: float) -> None:
    """Move the pending records into ``out``, except those whose question near-duplicates a
    held-out question; count what each leaf kept and lost."""
    held = [h["question"] for h in out.held_out]
    for phase, rows in (("phase1", pending.phase1), ("phase2", pending.phase2)):
        leaked = {leak.sample for leak in leaked_samples(held, [q for _, q in rows], threshold)}
        kept = getattr(out, phase)
        for i, (record, _) in enumerate(rows):
            counts = out.counts[record["metadata"]["leaf"]]
            if i in leaked:
                counts["dropped_held_out"] = counts.get("dropped_held_out", 0) + 1
                continue
            source = record["metadata"]["source"]
            counts[source] = counts.get(source, 0) + 1
            kept.append(record)


def mix(
    leaves: Sequence[Leaf],
    generated: Mapping[str, Sequence[dict[str, Any]]],
    cfg: MixConfig,
) -> Mix:
    """Build both phases. ``generated`` maps a leaf path to its kept chat records."""
    rng = random.Random(cfg.seed)
    out = Mix()
    pending = _Pending()
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
        counts["seed"] = counts["generated"] = counts["dropped_held_out"] = 0
        if leaf.kind == KNOWLEDGE:
            for seed in leaf.seeds:
                for qa in seed.qas:
                    if (qa.question, qa.answer) in held_keys:
                        continue
                    for with_context in (True, False):
                        user = f"{seed.context}\n\n{qa.question}" if with_context else qa.question
                        record = _record(
                            sys_prompt,
                            user,
                            qa.answer,
                            with_context,
                            {**meta, "source": "seed", "with_context": with_context},
                        )
                        pending.phase1.append((record, qa.question))
            for rec in generated.get(leaf.path, []):
                user, answer = rec["messages"][-2]["content"], rec["messages"][-1]["content"]
                chunk = (rec.get("metadata") or {}).get("chunk") or ""
                if chunk:
                    record = _record(
                        sys_prompt,
                        f"{chunk}\n\n{user}",
                        answer,
                        True,
                        {**meta, "source": "generated", "with_context": True},
                    )
                    pending.phase1.append((record, user))
                record = _record(
                    sys_prompt,
                    user,
                    answer,
                    False,
                    {**meta, "source": "generated", "with_context": False},
                )
                pending.phase1.append((record, user))
        else:
            for seed in leaf.seeds:
                if (seed.question, seed.answer) in held_keys:
                    continue
                user = f"{seed.context}\n\n{seed.question}" if seed.context else seed.question
                record = _record(sys_prompt, user, seed.answer, False, {**meta, "source": "seed"})
                pending.phase2.append((record, seed.question))
            records = list(generated.get(leaf.path, []))
            if cfg.skill_cap and len(records) > cfg.skill_cap:
                records = rng.sample(records, cfg.skill_cap)
            for rec in records:
                msgs = rec["messages"]
                record = _record(
                    sys_prompt,
                    msgs[-2]["content"],
                    msgs[-1]["content"],
                    False,
                    {**meta, "source": "generated"},
                )
                pending.phase2.append((record, _question(msgs[-2]["content"], leaf.kind)))
        out.counts[leaf.path] = dict(counts)
    _drop_leaks(out, pending, cfg.leak_threshold)
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
