"""Tokenisation, loss masks, packing and collation (pipeline/training/packing.py), plus
packed == unpacked."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
import torch
from transformers import LlamaForCausalLM

from pipeline.training.loss import PackedLoss, hidden_states, row_tensors
from pipeline.training.packing import (
    IGNORE,
    ChatTemplateError,
    Tokenized,
    TooLong,
    pack,
    pad_collate,
    plan_epoch,
    split_steps,
    tokenize,
)
from tests.support.models import tiny_llama_config


@pytest.fixture(scope="session")
def tiny_llama(tokenizer: Any) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = tiny_llama_config(len(tokenizer))
    model = LlamaForCausalLM(config)
    model.train()
    return model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def chat(*turns: tuple[str, str], unmask: bool = False) -> dict[str, Any]:
    return {
        "messages": [{"role": r, "content": c} for r, c in turns],
        "unmask": unmask,
        "metadata": {},
    }


CONVERSATION = (
    ("system", "Answer briefly."),
    ("user", "What is the capital of France?"),
    ("assistant", "Paris."),
    ("user", "And of Italy?"),
    ("assistant", "Rome, since 1871."),
)


def labelled_spans(tok: Any, sample: Tokenized) -> list[str]:
    """Decode each run of consecutive labelled tokens."""
    spans: list[list[int]] = []
    previous = False
    for token, label in zip(sample.input_ids, sample.labels, strict=True):
        if label != IGNORE:
            assert label == token
            if not previous:
                spans.append([])
            spans[-1].append(token)
        previous = label != IGNORE
    return [tok.decode(span) for span in spans]


# ----------------------------------------------------------------------------- masking


def test_assistant_only_labels_decode_to_the_answers_and_end_of_turn(tokenizer: Any) -> None:
    sample = tokenize(chat(*CONVERSATION), tokenizer, 1024)
    assert isinstance(sample, Tokenized)
    assert labelled_spans(tokenizer, sample) == ["Paris.<|im_end|>", "Rome, since 1871.<|im_end|>"]


def test_unmask_trains_user_turns_but_never_system(tokenizer: Any) -> None:
    sample = tokenize(chat(*CONVERSATION, unmask=True), tokenizer, 1024)
    assert isinstance(sample, Tokenized)
    assert labelled_spans(tokenizer, sample) == [
        "What is the capital of France?",
        "Paris.<|im_end|>",
        "And of Italy?",
        "Rome, since 1871.<|im_end|>",
    ]


def test_template_default_system_prompt_is_never_trained(tokenizer: Any) -> None:
    # SmolLM2's template inserts its own system prompt when the sample has none.
    record = chat(("user", "Hi"), ("assistant", "Hello! How can I help?"), unmask=True)
    sample = tokenize(record, tokenizer, 1024)
    assert isinstance(sample, Tokenized)
    assert "You are a helpful AI assistant" in tokenizer.decode(sample.input_ids)
    assert labelled_spans(tokenizer, sample) == ["Hi", "Hello! How can I help?<|im_end|>"]


def test_tokens_are_exactly_the_templates_own(tokenizer: Any) -> None:
    record = chat(*CONVERSATION)
    sample = tokenize(record, tokenizer, 1024)
    assert isinstance(sample, Tokenized)
    expected = tokenizer.apply_chat_template(record["messages"], tokenize=True)["input_ids"]
    assert sample.input_ids == list(expected)
    assert len(sample.labels) == len(sample.input_ids)


def test_too_long_is_reported_with_its_length_not_cut(tokenizer: Any) -> None:
    record = chat(("user", "word " * 300), ("assistant", "ok"))
    result = tokenize(record, tokenizer, 64)
    assert isinstance(result, TooLong)
    assert result.length > 300 and result.max_len == 64
    assert isinstance(tokenize(record, tokenizer, result.length), Tokenized)


def test_missing_or_unusable_chat_template_is_an_error(tokenizer: Any) -> None:
    broken = copy.deepcopy(tokenizer)
    broken.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        tokenize(chat(("user", "a"), ("assistant", "b")), broken, 100)
    # A template that renders earlier turns differently once more turns follow.
    broken.chat_template = (
        "{% for m in messages %}{% if loop.last %}[last]{% endif %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(ChatTemplateError, match="earlier turns"):
        tokenize(chat(("user", "a"), ("assistant", "b")), broken, 100)
    # A template that rewrites content.
    broken.chat_template = "{% for m in messages %}<{{ m['content'] | upper }}>{% endfor %}"
    with pytest.raises(ChatTemplateError, match="does not reproduce"):
        tokenize(chat(("user", "a"), ("assistant", "b")), broken, 100)


# ----------------------------------------------------------------------------- packing


def fake(length: int, tag: int) -> Tokenized:
    ids = [tag * 1000 + i for i in range(length)]
    return Tokenized(ids, [IGNORE] + ids[1:])


@pytest.mark.parametrize("seed", range(5))
def test_pack_invariants(seed: int) -> None:
    rng = random.Random(seed)
    samples = [fake(rng.randint(1, 300), i) for i in range(rng.randint(1, 80))]
    rows = pack(samples, 512, seed=seed)
    seen = sorted(i for row in rows for i in row.sample_ids)
    assert seen == list(range(len(samples)))  # each sample exactly once
    for row in rows:
        assert len(row) <= 512
        assert len(row.labels) == len(row.position_ids) == len(row)
        assert row.boundaries[0] == 0 and row.boundaries[-1] == len(row)
        for k, i in enumerate(row.sample_ids):
            a, b = row.boundaries[k], row.boundaries[k + 1]
            assert row.input_ids[a:b] == samples[i].input_ids
            assert row.position_ids[a:b] == list(range(b - a))  # positions restart
            assert row.labels[a] == IGNORE  # nothing predicts across a boundary
            assert row.labels[a + 1 : b] == samples[i].labels[1:]
    # Best-fit decreasing is close to the lower bound on rows.
    assert len(rows) <= sum(len(s) for s in samples) / 512 * 1.25 + 1


def test_pack_is_deterministic_and_seed_only_reorders() -> None:
    samples = [fake(n, i) for i, n in enumerate([90, 10, 50, 50, 70, 30, 20, 80])]
    first, again, other = pack(samples, 100, seed=1), pack(samples, 100, seed=1), pack(samples, 100)
    assert first == again
    assert sorted(r.sample_ids for r in first) == sorted(r.sample_ids for r in other)


def test_pack_docstring_example() -> None:
    rows = pack([fake(4, 0), fake(3, 1), fake(2, 2), fake(2, 3)], 6)
    shapes = sorted((r.sample_ids, r.position_ids, r.boundaries) for r in rows)
    assert shapes == [
        ([0, 2], [0, 1, 2, 3, 0, 1], [0, 4, 6]),
        ([1, 3], [0, 1, 2, 0, 1], [0, 3, 5]),
    ]


def test_pack_refuses_a_sample_longer_than_a_row() -> None:
    with pytest.raises(ValueError, match="rows hold"):
        pack([fake(10, 0)], 9)


def test_tiny_dataset_still_gets_min_steps() -> None:
    samples = [fake(100, i) for i in range(6)]
    steps = plan_epoch(samples, batch_tokens=4096, micro_batch_tokens=1024, min_steps=4, seed=0)
    assert len(steps) == 4
    assert sorted(i for step in steps for row in step for i in row.sample_ids) == list(range(6))
    # A big dataset is limited by batch_tokens instead.
    many = [fake(100, i) for i in range(200)]
    steps = plan_epoch(many, batch_tokens=4000, micro_batch_tokens=1000, min_steps=4, seed=0)
    assert len(steps) == 5
    assert all(len(row) <= 1000 for step in steps for row in step)


def test_split_steps_balances_tokens() -> None:
    rows = pack([fake(n, i) for i, n in enumerate([5, 5, 5, 5, 4])], 5)
    rows.sort(key=lambda r: -len(r))
    groups = split_steps(rows, 2)
    assert [sum(len(r) for r in g) for g in groups] == [10, 14]
    assert all(groups for groups in split_steps(rows, 5))
    with pytest.raises(ValueError):
        split_steps(rows, 6)


def test_pad_collate() -> None:
    padded = pad_collate([fake(3, 1), fake(1, 2)], pad_id=0)
    assert padded.input_ids == [[1000, 1001, 1002], [2000, 0, 0]]
    assert padded.labels == [[IGNORE, 1001, 1002], [IGNORE, IGNORE, IGNORE]]
    assert padded.attention_mask == [[1, 1, 1], [1, 0, 0]]


# ----------------------------------------------------------------------------- packed == unpacked


def sum_loss(logits: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """Summed next-token cross-entropy of one sequence (labels unshifted, HF style)."""
    target = torch.tensor(labels[1:])
    return torch.nn.functional.cross_entropy(
        logits[: len(labels) - 1].float(), target, ignore_index=IGNORE, reduction="sum"
    )


@pytest.fixture(scope="module")
def three_samples(tokenizer: Any) -> list[Tokenized]:
    records = [
        chat(("user", "Name a colour."), ("assistant", "Blue."), unmask=True),
        chat(("user", "Count to three."), ("assistant", "One, two, three.")),
        chat(("system", "Be terse."), ("user", "Why?"), ("assistant", "Because.")),
    ]
    samples = [tokenize(r, tokenizer, 256) for r in records]
    assert all(isinstance(s, Tokenized) for s in samples)
    return samples  # type: ignore[return-value]


def test_packed_row_loss_and_logits_equal_unpacked(
    tiny_llama: LlamaForCausalLM, three_samples: list[Tokenized]
) -> None:
    (row,) = pack(three_samples, 1024)
    inputs = row_tensors(row, "cpu")
    with torch.no_grad():
        packed_hidden = hidden_states(tiny_llama, inputs["input_ids"], inputs["position_ids"])
        packed_logits = tiny_llama.lm_head(packed_hidden)[0]
        packed_loss, n = PackedLoss(tiny_llama, 16)(**inputs)
        unpacked_loss = torch.zeros(())
        for k, i in enumerate(row.sample_ids):
            sample = three_samples[i]
            alone = tiny_llama(torch.tensor([sample.input_ids]), use_cache=False).logits[0]
            unpacked_loss += sum_loss(alone, sample.labels)
            a, b = row.boundaries[k], row.boundaries[k + 1]
            assert torch.allclose(packed_logits[a:b], alone, atol=1e-4), f"sample {k}"
    assert n == sum(s.n_loss_tokens for s in three_samples)
    assert abs(packed_loss.item() - unpacked_loss.item()) < 1e-4 * max(1.0, unpacked_loss.item())
    # The padded collate gives the same summed loss.
    padded = pad_collate(three_samples, pad_id=2)
    with torch.no_grad():
        logits = tiny_llama(
            torch.tensor(padded.input_ids),
            attention_mask=torch.tensor(padded.attention_mask),
            use_cache=False,
        ).logits
    padded_loss = sum(sum_loss(logits[j], padded.labels[j]) for j in range(3))
    assert abs(float(padded_loss) - unpacked_loss.item()) < 1e-3


def test_packing_leaks_across_samples_without_use_cache_false(
    tiny_llama: LlamaForCausalLM, three_samples: list[Tokenized]
) -> None:
    """The facts.md trap: in train mode a KV cache is created unless use_cache=False."""
    (row,) = pack(three_samples, 1024)
    inputs = row_tensors(row, "cpu")
    a, b = row.boundaries[1], row.boundaries[2]
    second = three_samples[row.sample_ids[1]]
    with torch.no_grad():
        alone = tiny_llama(torch.tensor([second.input_ids]), use_cache=False).logits[0]
        leaky = tiny_llama.model(
            input_ids=inputs["input_ids"], position_ids=inputs["position_ids"], attention_mask=None
        ).last_hidden_state
        leaky_logits = tiny_llama.lm_head(leaky)[0, a:b]
    assert (leaky_logits - alone).abs().max() > 1e-2
