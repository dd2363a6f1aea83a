"""The teacher run in this process: a Hugging Face causal LM (by default the embedded SmolLM2)
with batched, left-padded generation.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError
from pipeline.sdg.teacher.budget import fit_max_tokens
from pipeline.sdg.teacher.types import (
    Completion,
    Failure,
    GenParams,
    Messages,
    TeacherStats,
    positive_int,
    public_model_name,
)

# -- the embedded model -------------------------------------------------------------------------


class EmbeddedTeacher:
    """A Hugging Face causal LM run in this process (by default the embedded SmolLM2)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        max_context: int = 2048,
        device: str = "cpu",
        batch_size: int = 8,
    ) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise UsageError(
                f"{self.model_dir} is not a Hugging Face model folder (no config.json)"
            )
        config = json.loads((self.model_dir / "config.json").read_text())
        trained = positive_int(config.get("max_position_embeddings"))
        self.context_window = min(max_context, trained) if trained else max_context
        self.device = device
        self.batch_size = max(1, batch_size)
        self.identity = f"embedded:{self.model_dir.name}"
        self.public_name = public_model_name(self.model_dir.name)
        self.stats = TeacherStats()
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._tokenize_lock = threading.Lock()
        self._tokenizer: Any = None
        self._model: Any = None

    def __repr__(self) -> str:
        return f"EmbeddedTeacher({self.identity!r}, context_window={self.context_window})"

    def _load_tokenizer(self) -> Any:
        with self._load_lock:
            if self._tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
                tokenizer.padding_side = "left"
                if tokenizer.pad_token_id is None:
                    tokenizer.pad_token = tokenizer.eos_token
                self._tokenizer = tokenizer
            return self._tokenizer

    def _load_model(self) -> Any:
        with self._load_lock:
            if self._model is None:
                import torch
                import transformers

                loader: Any = transformers.AutoModelForCausalLM
                model = loader.from_pretrained(str(self.model_dir), dtype=torch.float32)
                model.to(self.device)
                model.eval()
                self._model = model
            return self._model

    def _encode(self, messages: Messages) -> list[int]:
        """The prompt's token ids, rendered with the model's chat template."""
        tokenizer = self._load_tokenizer()
        # A fast tokenizer used from several threads at once can fail ("Already borrowed").
        with self._tokenize_lock:
            text = tokenizer.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
            return list(tokenizer(str(text), add_special_tokens=False)["input_ids"])

    def count_tokens(self, messages: Messages) -> int:
        """Exact prompt tokens with the model's own chat template."""
        return len(self._encode(messages))

    def close(self) -> None:
        """Drop the model (the memory is freed when nothing else holds it)."""
        with self._load_lock:
            self._model = None

    def chat(self, requests: Sequence[Messages], params: GenParams) -> list[Completion | Failure]:
        """Generate for every request in length-sorted, left-padded batches."""
        start = time.monotonic()
        try:
            return self._chat(requests, params)
        finally:
            self.stats.add(wall_seconds=time.monotonic() - start)

    def _chat(self, requests: Sequence[Messages], params: GenParams) -> list[Completion | Failure]:
        results: list[Completion | Failure | None] = [None] * len(requests)
        jobs: list[tuple[int, int, list[int]]] = []  # (max_tokens, index, prompt ids)
        for index, messages in enumerate(requests):
            ids = self._encode(messages)
            fitted = fit_max_tokens(len(ids), params, self.context_window)
            if isinstance(fitted, Failure):
                results[index] = fitted
                self.stats.add(calls=1, failures=1)
            else:
                jobs.append((fitted, index, ids))
        jobs.sort(key=lambda job: (job[0], len(job[2])))
        for batch in _batches(jobs, self.batch_size):
            for index, completion in self._generate(batch, params):
                results[index] = completion
        return [r for r in results if r is not None]

    def _generate(
        self, batch: list[tuple[int, int, list[int]]], params: GenParams
    ) -> list[tuple[int, Completion]]:
        import torch
        import transformers

        model = self._load_model()
        tokenizer = self._tokenizer
        pad = int(tokenizer.pad_token_id)
        eos = tokenizer.eos_token_id
        width = max(len(ids) for _, _, ids in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, _, ids) in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        max_new = max(limit for limit, _, _ in batch)
        sampling = params.temperature > 0
        options: dict[str, Any] = {
            "max_new_tokens": max_new,
            "do_sample": sampling,
            "pad_token_id": pad,
            "eos_token_id": eos,
        }
        if sampling:
            options.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            options["stop_strings"] = list(params.stop)
        config = transformers.GenerationConfig(**options)  # type: ignore[no-untyped-call]
        begin = time.monotonic()
        seed = params.seed if sampling else None
        with self._generate_lock, torch.inference_mode(), _seeded(seed, self.device):
            output = model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                generation_config=config,
                tokenizer=tokenizer if params.stop else None,
            )
        self.stats.add(busy_seconds=time.monotonic() - begin)
        done: list[tuple[int, Completion]] = []
        for row, (limit, index, ids) in enumerate(batch):
            new = [int(t) for t in output[row, width:].tolist()]
            finish = "length"
            kept: list[int] = []
            for token in new[:limit]:
                if token == eos:
                    finish = "stop"
                    break
                kept.append(token)
            with self._tokenize_lock:
                text = tokenizer.decode(kept, skip_special_tokens=True)
            for stop in params.stop:
                cut = text.find(stop)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            completion = Completion(text, len(ids), len(kept), finish)
            self.stats.add(
                calls=1, prompt_tokens=completion.prompt_tokens, completion_tokens=len(kept)
            )
            done.append((index, completion))
        return done


def _batches(
    jobs: list[tuple[int, int, list[int]]], size: int
) -> Iterator[list[tuple[int, int, list[int]]]]:
    """Consecutive chunks of at most ``size`` jobs that share one ``max_tokens``."""
    batch: list[tuple[int, int, list[int]]] = []
    for job in jobs:
        if batch and (len(batch) == size or batch[0][0] != job[0]):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


@contextmanager
def _seeded(seed: int | None, device: str) -> Iterator[None]:
    """Seed torch's generators for sampling, restoring their state afterwards."""
    if seed is None:
        yield
        return
    import torch

    where = torch.device(device)
    devices: list[int] = []
    if where.type == "cuda":
        devices = [where.index if where.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices, device_type=where.type):
        torch.manual_seed(seed)
        yield
