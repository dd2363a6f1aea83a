"""Per-leaf evaluation: held-out seed questions answered by a model, scored against the
contributor's reference answers.

Two scores per question: ROUGE-L F1 of the model's greedy answer against the reference (what a
reader sees), and the mean per-token loss of the reference answer under the model (how close
the model is to saying it, robust to a single wrong word). The pure scoring functions come
first; model loading is at the bottom.

>>> round(rouge_l("the cat sat on the mat", "a cat sat on a mat"), 3)
0.667
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.training.packing import Tokenized, tokenize

_WORD = re.compile(r"\w+", re.UNICODE)


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens (longest common subsequence)."""
    p, r = _tokens(prediction), _tokens(reference)
    if not p or not r:
        return 0.0
    prev = [0] * (len(r) + 1)
    for a in p:
        cur = [0]
        for j, b in enumerate(r, start=1):
            cur.append(prev[j - 1] + 1 if a == b else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True, slots=True)
class Answer:
    leaf: str
    kind: str
    question: str
    reference: str
    answer: str
    rouge_l: float
    ref_loss: float


def per_leaf(answers: Sequence[Answer]) -> dict[str, dict[str, float]]:
    """Mean scores per leaf."""
    groups: dict[str, list[Answer]] = defaultdict(list)
    for a in answers:
        groups[a.leaf].append(a)
    return {
        leaf: {
            "rouge_l": sum(a.rouge_l for a in items) / len(items),
            "ref_loss": sum(a.ref_loss for a in items) / len(items),
            "questions": float(len(items)),
        }
        for leaf, items in sorted(groups.items())
    }


#: A leaf counts as improved when the reference answers became at least this much more likely...
MIN_LOSS_GAIN = 0.02
#: ...and the greedy answers did not lose more than this much ROUGE-L (one or a few held-out
#: questions per leaf make ROUGE-L noisy; the reference loss averages over every answer token).
MAX_ROUGE_DROP = 0.05


def improved(
    rouge_before: float, rouge_after: float, loss_before: float, loss_after: float
) -> bool:
    """The per-leaf verdict.

    >>> improved(0.10, 0.09, 3.0, 2.5), improved(0.10, 0.00, 3.0, 2.5), improved(0.1, 0.4, 3.0, 3.0)
    (True, False, False)
    """
    return (
        loss_after <= loss_before * (1 - MIN_LOSS_GAIN)
        and rouge_after >= rouge_before - MAX_ROUGE_DROP
    )


def compare(models: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """One row per leaf with every model's scores, the change from base to the last model, and
    (for knowledge) how much of phase 1's gain phase 2 kept."""
    names = list(models)
    leaves = sorted({leaf for scores in models.values() for leaf in scores})
    rows = []
    for leaf in leaves:
        row: dict[str, Any] = {"leaf": leaf}
        for name in names:
            s = models[name].get(leaf, {})
            row[f"{name}_rouge_l"] = s.get("rouge_l")
            row[f"{name}_ref_loss"] = s.get("ref_loss")
        first, last = names[0], names[-1]
        if row[f"{first}_rouge_l"] is not None and row[f"{last}_rouge_l"] is not None:
            row["delta_rouge_l"] = row[f"{last}_rouge_l"] - row[f"{first}_rouge_l"]
            row["delta_ref_loss"] = row[f"{last}_ref_loss"] - row[f"{first}_ref_loss"]
            row["improved"] = improved(
                row[f"{first}_rouge_l"],
                row[f"{last}_rouge_l"],
                row[f"{first}_ref_loss"],
                row[f"{last}_ref_loss"],
            )
        if len(names) >= 3 and leaf.startswith("knowledge/"):  # a knowledge leaf's phase-1 gain
            base, mid = names[0], names[1]
            gain = (
                models[mid].get(leaf, {}).get("ref_loss"),
                models[base].get(leaf, {}).get("ref_loss"),
            )
            end = models[last].get(leaf, {}).get("ref_loss")
            if None not in gain and end is not None and gain[1] - gain[0] > 1e-6:  # type: ignore[operator]
                row["retention"] = (gain[1] - end) / (gain[1] - gain[0])  # type: ignore[operator]
        rows.append(row)
    return rows


# -- running a model ---------------------------------------------------------------------------


def held_out_record(held: Mapping[str, Any], system_prompt: str) -> dict[str, Any]:
    """A held-out question and its reference answer as a chat record, written the way the mix
    stage writes training records (the context, if any, before the question; no system turn when
    the prompt is empty). Training scores checkpoints on these records and evaluation scores the
    reference answer on the same ones, so both speak of the same tokens.

    >>> held_out_record({"question": "Why?", "answer": "So.", "context": "C"}, "")["messages"]
    [{'role': 'user', 'content': 'C\\n\\nWhy?'}, {'role': 'assistant', 'content': 'So.'}]
    """
    context = held.get("context") or ""
    user = f"{context}\n\n{held['question']}" if context else str(held["question"])
    messages = [
        {"role": "user", "content": user},
        {"role": "assistant", "content": str(held["answer"])},
    ]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return {"messages": messages, "unmask": False}


#: Evaluation never cuts or drops a reference answer, however long.
_NO_LIMIT = 1 << 30
#: The reference loss reported when a sample has nothing to score or the loss is not finite.
NO_LOSS = 99.0


def reference_sample(tokenizer: Any, held: Mapping[str, Any], system_prompt: str) -> Tokenized:
    """The held-out record tokenised by the training code: the student's chat template, labels on
    the assistant's answer (and the end-of-turn token that closes it) only."""
    sample = tokenize(held_out_record(held, system_prompt), tokenizer, _NO_LIMIT)
    assert isinstance(sample, Tokenized)  # no limit: never TooLong
    return sample


def reference_losses(model: Any, samples: Sequence[Tokenized], device: str = "cpu") -> list[float]:
    """Mean loss per trained token of each sample, each packed alone into one row and scored by
    the training loss (:func:`pipeline.training.loss.evaluate_loss`, full logits)."""
    from pipeline.training.distributed import Dist
    from pipeline.training.loss import PackedLoss, evaluate_loss

    module = PackedLoss(model, None)
    dist = Dist(device=device)
    losses = []
    for sample in samples:
        value = evaluate_loss(module, [sample], len(sample), dist) if sample.n_loss_tokens else None
        losses.append(value if value is not None and math.isfinite(value) else NO_LOSS)
    return losses


def evaluate_model(
    model_dir: Path,
    held_out: Sequence[dict[str, Any]],
    *,
    system_prompt: str = "",
    max_new_tokens: int = 96,
    batch_size: int = 8,
    device: str = "cpu",
) -> list[Answer]:
    """Answer every held-out question with the model in ``model_dir`` (greedy) and score it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"

    prompts = [
        str(
            tokenizer.apply_chat_template(
                held_out_record(h, system_prompt)["messages"][:-1],
                add_generation_prompt=True,
                tokenize=False,
            )
        )
        for h in held_out
    ]
    answers: list[str] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            batch = tokenizer(
                prompts[i : i + batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(device)
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            for row in out[:, batch["input_ids"].shape[1] :]:
                answers.append(str(tokenizer.decode(row, skip_special_tokens=True)).strip())
    samples = [reference_sample(tokenizer, h, system_prompt) for h in held_out]
    losses = reference_losses(model, samples, device)
    return [
        Answer(h["leaf"], h["kind"], h["question"], h["answer"], a, rouge_l(a, h["answer"]), loss)
        for h, a, loss in zip(held_out, answers, losses, strict=True)
    ]
