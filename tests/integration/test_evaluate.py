"""The evaluation verdict scores a reference answer with the loss that picks checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.training import evaluate as ev
from pipeline.training.distributed import Dist
from pipeline.training.loss import PackedLoss, evaluate_loss
from pipeline.training.packing import IGNORE, Tokenized, tokenize
from tests.support.models import tiny_student

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SYSTEM = "You are a helpful assistant."

#: Held-out records as the mix stage writes them: several shapes of question and answer.
HELD: list[dict[str, Any]] = [
    {"leaf": "knowledge/a", "kind": "knowledge", "question": "What is X?", "answer": "X is Y."},
    {
        "leaf": "compositional_skills/b",
        "kind": "skill",
        "question": "Summarise the text.",
        "answer": "  It says two things:\n- one\n- two  ",
        "context": "Some context\nover two lines.",
    },
    {"leaf": "knowledge/c", "kind": "knowledge", "question": "Où?", "answer": "À Zürich — 42 °C."},
    {"leaf": "knowledge/d", "kind": "knowledge", "question": "Q", "answer": "<|im_end|> is text"},
]


def _training_record(held: dict[str, Any], system: str) -> dict[str, Any]:
    """A held-out pair written out as a chat record, the way the mix stage writes training data."""
    user = f"{held['context']}\n\n{held['question']}" if held.get("context") else held["question"]
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": held["answer"]}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages, "unmask": False}


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_student(tmp_path_factory.mktemp("student"))


@pytest.mark.parametrize("system", [SYSTEM, ""])
def test_evaluation_loss_is_the_training_loss_of_the_pair_as_one_packed_row(
    student: Path, system: str
) -> None:
    answers = ev.evaluate_model(student, HELD, system_prompt=system, max_new_tokens=1)
    tokenizer = AutoTokenizer.from_pretrained(student)
    model = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
    module = PackedLoss(model, None)
    for held, answer in zip(HELD, answers, strict=True):
        sample = tokenize(_training_record(held, system), tokenizer, 4096)
        assert isinstance(sample, Tokenized)
        trained = evaluate_loss(module, [sample], 4096, Dist())
        assert trained is not None
        assert abs(answer.ref_loss - trained) < 1e-6, held["answer"]


def test_the_reference_mask_covers_exactly_the_answer_and_its_end_of_turn(student: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(student)
    end_of_turn = "<|im_end|>"
    for held in HELD:
        sample = ev.reference_sample(tokenizer, held, SYSTEM)
        trained = [i for i, label in enumerate(sample.labels) if label != IGNORE]
        assert trained == list(range(trained[0], trained[-1] + 1)), "one contiguous span"
        text = tokenizer.decode([sample.input_ids[i] for i in trained])
        assert text.endswith(end_of_turn)
        assert text.removesuffix(end_of_turn).strip() == held["answer"].strip()
        # Nothing of the question, the context or the system prompt is scored (a space that
        # opens the answer may share a token with the one before it and stay unscored).
        before = tokenizer.decode(sample.input_ids[: trained[0]])
        assert before.rstrip(" ").endswith("<|im_start|>assistant\n")
        assert held["question"] in before and SYSTEM in before
