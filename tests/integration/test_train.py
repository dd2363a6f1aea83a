"""The training loop (pipeline/training/) on tiny random models, plus one real SmolLM2 run."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint import FileSystemReader
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from pipeline.embedded import model_dir
from pipeline.errors import UsageError
from pipeline.training.attention import VARLEN, register_varlen_attention
from pipeline.training.distributed import Dist
from pipeline.training.loop import TrainConfig, _lr_lambda, train_phase
from pipeline.training.loss import PackedLoss, forward_backward, hidden_states, row_tensors
from pipeline.training.packing import Tokenized, pack, tokenize
from tests.support.models import EMBEDDED_CACHE, tiny_llama_config
from tests.support.records import records

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(vocab: int) -> LlamaConfig:
    config: LlamaConfig = tiny_llama_config(vocab, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return config


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A random 2-layer Llama with SmolLM2's tokenizer and chat template."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(tiny_config(len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "lr": 3e-3,
        "epochs": 2,
        "batch_tokens": 256,
        "micro_batch_tokens": 512,
        "max_seq_len": 512,
        "lora_r": 8,
        "lora_alpha": 16,
    }
    return TrainConfig(**{**base, **overrides})


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


# ----------------------------------------------------------------------------- learning


def test_full_finetune_loss_decreases_and_changes_every_weight(tiny_dir: Path, tmp_path: Path):
    cfg = config(lora=False, lr=2e-3, epochs=4)
    result = train_phase(cfg, tiny_dir, records(24), records(4, seed=9), tmp_path / "run")
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] - 1.0
    evals = [e["loss"] for e in result.eval_losses]
    assert evals[-1] < evals[0]
    before, after = weights(tiny_dir), weights(result.final_dir)  # type: ignore[arg-type]
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []
    assert result.adapter_dir is None and result.tokens_trained > 0


def test_lora_trains_every_adapter_weight_and_leaves_the_base_alone(
    tiny_dir: Path, tmp_path: Path
) -> None:
    cfg = config(epochs=2, checkpoint_every_steps=1, keep_checkpoints=100, lora_dropout=0.0)
    result = train_phase(cfg, tiny_dir, records(12), [], tmp_path / "run")
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    first = load_file(checkpoints[0] / "adapter" / "adapter_model.safetensors")
    last = load_file(result.adapter_dir / "adapter_model.safetensors")  # type: ignore[operator]
    assert first.keys() == last.keys() and len(first) == 2 * 7 * 2  # A and B, 7 targets, 2 layers
    assert [k for k in first if torch.equal(first[k], last[k])] == []
    # The checkpoint state holds only trainable tensors: the frozen base never changes.
    stored = FileSystemReader(checkpoints[-1] / "state").read_metadata().state_dict_metadata
    model_keys = [k for k in stored if k.startswith("model.")]
    assert len(model_keys) == 2 * 7 * 2 and all("lora_" in k for k in model_keys)
    # The merged model differs from the base exactly in the adapted projections.
    before, after = weights(tiny_dir), weights(result.final_dir)  # type: ignore[arg-type]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapted = {k for k in before if any(f"{t}.weight" in k for t in cfg.lora_targets)}
    assert changed == adapted


def test_loss_is_normalised_over_the_whole_step_not_per_micro_batch(
    tiny_dir: Path, tokenizer: Any
) -> None:
    samples = [tokenize(r, tokenizer, 512) for r in records(5, words=3)]
    samples += [tokenize(r, tokenizer, 512) for r in records(2, seed=1, words=30)]
    assert all(isinstance(s, Tokenized) for s in samples)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    module = PackedLoss(model, chunk_tokens=8)

    def gradient(rows: list[Any]) -> torch.Tensor:
        module.zero_grad()
        forward_backward(module, rows, rows, Dist(), False)
        return torch.cat([p.grad.flatten() for p in module.parameters()])  # type: ignore[union-attr]

    one_row = gradient(pack(samples, 4096))  # type: ignore[arg-type]
    per_sample = gradient(pack(samples, 120))  # type: ignore[arg-type]
    assert len(pack(samples, 120)) > 3  # type: ignore[arg-type]
    assert torch.allclose(one_row, per_sample, atol=1e-7, rtol=1e-4)
    assert one_row.abs().max() > 1e-4


def test_tiny_dataset_gets_min_steps_per_epoch(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = config(batch_tokens=3840 * 100, min_steps_per_epoch=4, epochs=3, warmup_ratio=0.25)
    result = train_phase(cfg, tiny_dir, records(6), [], tmp_path / "run")
    assert result.steps_per_epoch == 4 and result.steps == 12
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] > 0 and max(lrs) == pytest.approx(cfg.lr)  # warmup reaches the peak
    assert lrs.index(max(lrs)) == 3  # 3 warmup steps (25% of 12)
    assert [e["step"] for e in result.eval_losses] == [4, 8, 12]  # one checkpoint per epoch


def test_lr_schedule_docstring_example() -> None:
    factor = _lr_lambda(2, 6)
    assert [round(factor(s), 2) for s in range(6)] == [0.33, 0.67, 1.0, 0.85, 0.5, 0.15]


# ----------------------------------------------------------------------------- checkpoints


class Stop(Exception):
    pass


def test_killed_run_resumes_to_the_same_result(tiny_dir: Path, tmp_path: Path) -> None:
    # LoRA dropout makes the result depend on the restored RNG state too.
    cfg = config(epochs=3, checkpoint_every_steps=3, lora_dropout=0.2, lr=5e-3)
    data, held = records(16), records(3, seed=5)
    whole = train_phase(cfg, tiny_dir, data, held, tmp_path / "whole")

    def kill(event: dict[str, Any]) -> None:
        if event["event"] == "step" and event["step"] == 5:
            raise Stop

    with pytest.raises(Stop):
        train_phase(cfg, tiny_dir, data, held, tmp_path / "killed", progress=kill)
    assert not (tmp_path / "killed" / "final").exists()
    resumed = train_phase(cfg, tiny_dir, data, held, tmp_path / "killed")
    assert [h["step"] for h in resumed.history] == list(range(1, whole.steps + 1))
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in whole.history], rel=1e-5
    )
    a, b = weights(whole.final_dir), weights(resumed.final_dir)  # type: ignore[arg-type]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed.best_checkpoint is not None
    # A finished run is not trained again; another config in the same folder is refused.
    again = train_phase(cfg, tiny_dir, data, held, tmp_path / "killed")
    assert again.history == resumed.history
    with pytest.raises(UsageError, match="another config"):
        train_phase(dataclasses.replace(cfg, lr=1e-3), tiny_dir, data, held, tmp_path / "killed")


def test_checkpoints_are_bounded_and_keep_the_newest_and_best(
    tiny_dir: Path, tmp_path: Path
) -> None:
    cfg = config(epochs=2, checkpoint_every_steps=1, keep_checkpoints=2, lr=2e-2, lora=False)
    result = train_phase(cfg, tiny_dir, records(12), records(3, seed=7), tmp_path / "run")
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert len(kept) <= 2 and f"step-{result.steps:06d}" in kept
    scored = [e for e in result.eval_losses if e["loss"] is not None]
    best = min(scored, key=lambda e: e["loss"])
    assert result.best_checkpoint is not None
    assert result.best_checkpoint.name == f"step-{best['step']:06d}"
    assert result.best_checkpoint.name in kept
    state = json.loads((result.best_checkpoint / "trainer_state.json").read_text())
    assert state["state"]["step"] == best["step"]


def test_final_folder_reloads_and_generates(tiny_dir: Path, tmp_path: Path) -> None:
    result = train_phase(config(epochs=1), tiny_dir, records(8), [], tmp_path / "run")
    assert result.final_dir is not None
    model = AutoModelForCausalLM.from_pretrained(result.final_dir)
    tok = AutoTokenizer.from_pretrained(result.final_dir)
    assert tok.chat_template
    question = [{"role": "user", "content": "Repeat: red"}]
    prompt = tok.apply_chat_template(question, add_generation_prompt=True, return_tensors="pt")
    ids = prompt["input_ids"]
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False
    )
    assert out.shape[1] > ids.shape[1]


def test_too_long_samples_are_counted_not_trained(tiny_dir: Path, tmp_path: Path) -> None:
    data = records(6) + records(2, seed=3, words=400)
    result = train_phase(config(epochs=1, max_seq_len=256), tiny_dir, data, [], tmp_path / "r")
    assert result.skipped_too_long == 2


# ----------------------------------------------------------------------------- attention paths


def test_varlen_attention_matches_sdpa_on_packed_rows(tiny_dir: Path, tokenizer: Any) -> None:
    """The varlen path (flash-attention kernel on CUDA, exact reference here) sees the same
    per-sample boundaries as the sdpa block-diagonal mask."""
    samples = [tokenize(r, tokenizer, 512) for r in records(4, words=6)]
    (row,) = pack(samples, 2048)  # type: ignore[arg-type]
    register_varlen_attention()
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="sdpa")
    varlen = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation=VARLEN)
    inputs = row_tensors(row, "cpu")
    cu = torch.tensor(row.boundaries, dtype=torch.int32)
    extra = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu}
    extra |= {"max_length_q": max(row.seq_lens), "max_length_k": max(row.seq_lens)}
    with torch.no_grad():
        a = hidden_states(sdpa, inputs["input_ids"], inputs["position_ids"])
        b = hidden_states(varlen, inputs["input_ids"], inputs["position_ids"], **extra)
    assert torch.allclose(a, b, atol=1e-5)


def test_chunked_and_full_logits_losses_agree(tiny_dir: Path, tokenizer: Any) -> None:
    samples = [tokenize(r, tokenizer, 512) for r in records(4, words=6)]
    (row,) = pack(samples, 2048)  # type: ignore[arg-type]
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    with torch.no_grad():
        chunked, n1 = PackedLoss(model, 5)(**row_tensors(row, "cpu"))
        whole, n2 = PackedLoss(model, None)(**row_tensors(row, "cpu"))
    assert n1 == n2 == row.n_loss_tokens
    assert abs(chunked.item() - whole.item()) < 1e-3


# ----------------------------------------------------------------------------- benchmark smoke


def test_gpu_benchmark_runs_tiny_on_cpu(tmp_path: Path) -> None:
    bench = importlib.import_module("benchmarks.gpu_train")
    report = bench.main(["--tiny", "--steps", "2", "--work-dir", str(tmp_path), "--quiet"])
    assert {r["recipe"] for r in report} == {"labbot", "hf-trainer"}
    assert all(r["tokens_per_s"] > 0 for r in report)


# ----------------------------------------------------------------------------- the real student


@pytest.mark.slow
def test_real_smollm2_lora_loss_decreases(tmp_path: Path) -> None:
    facts = [
        ("What colour is the labbot logo?", "The labbot logo is teal."),
        ("Who maintains labbot?", "The labbot maintainers."),
        ("What does labbot train?", "Small chat models from a taxonomy."),
        ("Which method does labbot use?", "The LAB method."),
        ("How many phases does training have?", "Two phases."),
    ]
    data = [
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ],
            "unmask": False,
        }
        for q, a in facts * 2
    ]
    cfg = TrainConfig(
        lr=2e-3,
        epochs=3,
        batch_tokens=400,
        micro_batch_tokens=1024,
        min_steps_per_epoch=2,
        warmup_ratio=0.0,
    )
    result = train_phase(cfg, model_dir(EMBEDDED_CACHE), data, data[:3], tmp_path / "run")
    first = sum(h["loss"] for h in result.history[: result.steps_per_epoch])
    last = sum(h["loss"] for h in result.history[-result.steps_per_epoch :])
    assert last < first * 0.8
    evals = [e["loss"] for e in result.eval_losses]
    assert evals[-1] < evals[0]
    assert (result.final_dir / "model.safetensors").is_file()  # type: ignore[operator]
