"""Benchmark: labbot's phase loop against a stock transformers ``Trainer``, same models, same data.

    .venv/bin/python benchmarks/gpu_train.py                 # 0.5B and 1.5B on one GPU
    .venv/bin/python benchmarks/gpu_train.py --sizes 0.5b --attn sdpa --compile
    .venv/bin/python benchmarks/gpu_train.py --tiny --steps 2  # CPU smoke test (seconds)

Both recipes full-fine-tune random-initialised Qwen2.5-shaped models (real shapes, vocab 151,936;
no downloads) in bf16 mixed precision on synthetic chat samples whose lengths follow SDG output
(log-normal, median ~350 tokens, 32 to 2,048). labbot trains padding-free packed rows
(``--row-tokens``; default 16,384 at 0.5B and 8,192 at 1.5B so that activations without
checkpointing fit an 80 GB H100) through ``pipeline.training.loop.train_phase``; the baseline is
``Trainer`` with batches of 8 padded to the longest sample. Reported per recipe and size:
real (non-pad) tokens/s after ``--warmup`` steps, MFU = (6 · params · tokens/s + causal
attention FLOPs) / ``--peak-tflops``, and peak GPU memory.

Targets (issue): labbot ≥ 4x the Trainer's tokens/s at 0.5B and ≥ 40% MFU at 1.5B. Reference
numbers on one H200 are in ../shared/docs/facts.md (Trainer: 12,208 tok/s at 0.5B, 7,365 at 1.5B).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.training.loop import TrainConfig, train_phase  # noqa: E402
from pipeline.training.packing import Tokenized, tokenize  # noqa: E402

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int = 151_936


ROW_TOKENS = {"0.5b": 16_384, "1.5b": 8_192, "tiny": 2048}
SHAPES = {
    "0.5b": Shape(hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2),
    "1.5b": Shape(hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2),
    "tiny": Shape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=4096),
}


def build_tokenizer() -> Any:
    """A byte-level Qwen2 tokenizer without merges (one token per character), ChatML template.

    It is built, not downloaded, and reloads as itself from a Qwen2 model folder (transformers
    picks the tokenizer class from the model type).
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    tok = Qwen2Tokenizer(
        vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = CHATML
    return tok


OVERHEAD = 21  # template tokens around one user and one assistant turn (one per character)
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def synthetic_chats(n: int, median: int, longest: int, seed: int) -> list[dict[str, Any]]:
    """Chat records whose token lengths are log-normal around ``median`` (32 to ``longest``)."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        length = int(min(longest, max(32, rng.lognormvariate(math.log(median), 0.75))))
        body = length - OVERHEAD
        user = max(1, int(body * 0.4))
        text = "".join(rng.choice(LETTERS) for _ in range(body))
        records.append(
            {
                "messages": [
                    {"role": "user", "content": text[:user]},
                    {"role": "assistant", "content": text[user:]},
                ],
                "unmask": False,
            }
        )
    return records


def make_model_dir(shape: Shape, tokenizer: Any, folder: Path, device: str) -> int:
    """Save a random-initialised Qwen2 model (bf16) with the tokenizer; return its parameters."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=max(shape.vocab, len(tokenizer)),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=32_768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    del model
    return params


def attention_flops_per_token(samples: list[Tokenized], shape: Shape) -> float:
    """Causal attention matmul FLOPs (forward + backward) per real token: 6·L·d·Σs² / Σs."""
    squares = sum(len(s) ** 2 for s in samples)
    return 6 * shape.layers * shape.hidden * squares / sum(len(s) for s in samples)


def reset_between_runs(device: str) -> None:
    """Free the last run's memory and forget accelerate's process-wide state (the Trainer
    builds its own Accelerator with bf16 mixed precision)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def run_labbot(
    args: argparse.Namespace, size: str, model_dir: Path, records: list[dict[str, Any]]
) -> dict:
    row_tokens = args.row_tokens or ROW_TOKENS[size]
    cfg = TrainConfig(
        lr=1e-5,
        epochs=1,
        batch_tokens=row_tokens * args.rows_per_step,
        micro_batch_tokens=row_tokens,
        max_seq_len=args.longest,
        min_steps_per_epoch=1,
        warmup_ratio=0.0,
        lora=False,
        dtype=args.dtype,
        attn_implementation=args.attn,
        chunked_loss=not args.no_chunked_loss,
        compile=args.compile,
        checkpoint_every_steps=0,
        max_steps=args.steps + args.warmup,
        save_final=False,
    )
    out = model_dir.parent / f"{model_dir.name}-labbot-run"
    result = train_phase(cfg, model_dir, records, [], out, resume=False)
    timed = result.history[args.warmup :] or result.history
    tokens = sum(h["tokens"] for h in timed)
    seconds = sum(h["tokens"] / h["tokens_per_s"] for h in timed)
    return {"tokens": tokens, "seconds": seconds, "steps": len(timed)}


def run_trainer(
    args: argparse.Namespace, model_dir: Path, samples: list[Tokenized], device: str
) -> dict:
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    real_tokens: list[int] = []
    stamps: list[float] = []

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        real_tokens.append(sum(len(b["input_ids"]) for b in batch))
        ids = [b["input_ids"] + [2] * (width - len(b["input_ids"])) for b in batch]
        labels = [b["labels"] + [-100] * (width - len(b["labels"])) for b in batch]
        mask = [[1] * len(b["input_ids"]) + [0] * (width - len(b["input_ids"])) for b in batch]
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *_: Any, **__: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    steps = args.trainer_steps + args.warmup
    training_args = TrainingArguments(
        output_dir=str(model_dir.parent / f"{model_dir.name}-trainer-run"),
        per_device_train_batch_size=8,
        max_steps=steps,
        learning_rate=1e-5,
        bf16=device == "cuda",
        use_cpu=device != "cuda",
        logging_strategy="no",
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    dataset = [{"input_ids": s.input_ids, "labels": s.labels} for s in samples]
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=collate,
        callbacks=[Clock()],
    )
    trainer.train()
    first = min(args.warmup, len(stamps) - 1)
    tokens = sum(real_tokens[first + 1 : len(stamps)])
    seconds = stamps[-1] - stamps[first]
    del trainer, model
    return {"tokens": tokens, "seconds": seconds, "steps": len(stamps) - first - 1}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="0.5b,1.5b", help="comma-separated: 0.5b, 1.5b")
    ap.add_argument("--steps", type=int, default=20, help="timed labbot optimizer steps")
    ap.add_argument("--trainer-steps", type=int, default=40, help="timed Trainer steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (both recipes)")
    ap.add_argument("--row-tokens", type=int, default=None, help="tokens per packed row")
    ap.add_argument("--rows-per-step", type=int, default=1, help="micro-batches per step")
    ap.add_argument("--attn", default=None, help="labbot attention: varlen (CUDA default), sdpa…")
    ap.add_argument("--dtype", default="auto", help="labbot dtype: auto (bf16-mixed), bfloat16")
    ap.add_argument("--compile", action="store_true", help="torch.compile the decoder layers")
    ap.add_argument("--no-chunked-loss", action="store_true", help="full logits via the model")
    ap.add_argument("--peak-tflops", type=float, default=800.0, help="bf16 peak for MFU")
    ap.add_argument("--recipes", default="labbot,hf-trainer")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on any device (smoke test)")
    ap.add_argument("--work-dir", default="/tmp/labbot-gpu-bench")
    ap.add_argument("--json", default=None, help="also write the report here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.attn is None:
        args.attn = "varlen" if device == "cuda" else "sdpa"
    sizes = ["tiny"] if args.tiny else args.sizes.split(",")
    if args.tiny:
        args.row_tokens = min(args.row_tokens or 2048, 2048)
        args.trainer_steps = min(args.trainer_steps, args.steps)
        args.warmup = min(args.warmup, 1)
    median, longest = (60, 256) if args.tiny else (350, 2048)
    args.longest = longest
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    most_row_tokens = args.row_tokens or max(ROW_TOKENS[s] for s in sizes)
    needed = (args.steps + args.warmup + 2) * most_row_tokens * args.rows_per_step
    n_records = max(64, int(needed / (median * 1.3)))
    records = synthetic_chats(n_records, median, longest, seed=0)
    samples = [tokenize(r, tokenizer, longest) for r in records]
    tokenized = [s for s in samples if isinstance(s, Tokenized)]
    say = (lambda *_: None) if args.quiet else print

    report: list[dict[str, Any]] = []
    for size in sizes:
        shape = SHAPES[size]
        model_dir = work / f"qwen2-{size}"
        params = make_model_dir(shape, tokenizer, model_dir, device)
        attn_per_token = attention_flops_per_token(tokenized, shape)
        say(f"{size}: {params / 1e6:.0f}M parameters, {len(tokenized)} samples on {device}")
        for recipe in args.recipes.split(","):
            reset_between_runs(device)
            try:
                if recipe == "labbot":
                    run = run_labbot(args, size, model_dir, records)
                else:
                    run = run_trainer(args, model_dir, tokenized, device)
            except Exception as exc:  # report and go on with the other recipes
                say(f"  {recipe}: FAILED {type(exc).__name__}: {exc}")
                report.append({"recipe": recipe, "size": size, "error": repr(exc)})
                continue
            rate = run["tokens"] / run["seconds"]
            flops = (6 * params + attn_per_token) * rate
            row = {
                "recipe": recipe,
                "size": size,
                "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                "params": params,
                "tokens_per_s": round(rate, 1),
                "mfu": round(flops / (args.peak_tflops * 1e12), 4),
                "peak_memory_gib": peak_memory_gib(device),
                "timed_steps": run["steps"],
                "timed_tokens": run["tokens"],
                "attn": args.attn if recipe == "labbot" else "sdpa (padded)",
                "row_tokens": (args.row_tokens or ROW_TOKENS[size]) if recipe == "labbot" else None,
                "compile": args.compile if recipe == "labbot" else False,
            }
            report.append(row)
            mem = row["peak_memory_gib"]
            say(
                f"  {recipe:10s} {rate:10.0f} tok/s  MFU {row['mfu']:6.1%}  "
                f"peak {'-' if mem is None else f'{mem:.1f} GiB'}"
            )
        ok = {r["recipe"]: r for r in report if r["size"] == size and "error" not in r}
        if "labbot" in ok and "hf-trainer" in ok:
            speedup = ok["labbot"]["tokens_per_s"] / ok["hf-trainer"]["tokens_per_s"]
            say(f"  speed-up over Trainer: {speedup:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    say(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
