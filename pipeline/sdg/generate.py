"""Synthetic data generation: a teacher writes new samples from a leaf's seed examples, and a
critic (the same teacher, asked YES/NO questions) filters them.

Pipelines, one chain of teacher calls per item so the teacher is never idle between stages:

- freeform skill: seed -> new questions -> critic(question) -> answer -> critic(answer)
- grounded skill: seed -> new context -> questions on it -> answer from it -> critic(grounded)
- knowledge: document chunk (x a seed as example) -> question/answer pairs ->
  critic(faithful) -> critic(relevant) -> critic(standalone)

Every sample, kept or rejected, carries its provenance: leaf, seed, chunk, teacher, prompt
hashes, and each filter it passed or failed with the reason. Results are cached per leaf under a
key of everything that shapes them, so an unchanged leaf is never regenerated.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pipeline.sdg import prompts
from pipeline.sdg.chunking import chunk_markdown
from pipeline.sdg.teacher import Completion, Failure, GenParams, Teacher
from pipeline.taxonomy.leaves import GROUNDED, KNOWLEDGE, Leaf

PIPELINE_VERSION = "1"

Progress = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class GenerateConfig:
    """Knobs of one generation run (all part of the cache key)."""

    samples: int = 12  # candidate samples per leaf (before filters)
    questions_per_call: int = 4
    max_tokens: int = 256
    temperature: float = 0.7
    critic: bool = True
    seed: int = 42
    chunk_words: int = 0  # 0: derived from the teacher's context window

    def key(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sample:
    """One candidate sample and how it fared."""

    id: str
    leaf: str
    kind: str
    question: str
    answer: str = ""
    context: str = ""
    seed_index: int = 0
    chunk_index: int | None = None
    teacher: str = ""
    prompt_hashes: dict[str, str] = field(default_factory=dict)
    filters: list[dict[str, Any]] = field(default_factory=list)
    kept: bool = False
    rejected_by: str | None = None

    def passed(self, name: str) -> None:
        self.filters.append({"filter": name, "passed": True})

    def reject(self, name: str, reason: str) -> None:
        self.filters.append({"filter": name, "passed": False, "reason": reason})
        self.rejected_by = name
        self.kept = False

    def to_record(self) -> dict[str, Any]:
        """The training record: chat messages plus metadata."""
        user = f"{self.context}\n\n{self.question}" if self.kind == GROUNDED else self.question
        return {
            "messages": [
                {"role": "user", "content": user},
                {"role": "assistant", "content": self.answer},
            ],
            "metadata": {
                "leaf": self.leaf,
                "kind": self.kind,
                "sample_id": self.id,
                "seed_index": self.seed_index,
                "chunk_index": self.chunk_index,
                "chunk": self.context if self.kind == KNOWLEDGE else None,
                "teacher": self.teacher,
                "source": "generated",
            },
        }


@dataclass
class LeafResult:
    """What generation produced for one leaf."""

    leaf: str
    slug: str
    kind: str
    samples: list[Sample]
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False
    chunks: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def kept(self) -> list[Sample]:
        return [s for s in self.samples if s.kept]

    def counts(self) -> dict[str, Any]:
        rejected = Counter(s.rejected_by for s in self.samples if not s.kept and s.rejected_by)
        return {
            "leaf": self.leaf,
            "kind": self.kind,
            "generated": len(self.samples),
            "kept": len(self.kept),
            "rejected": dict(sorted(rejected.items())),
            "teacher_calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 2),
            "cached": self.cached,
            "chunks": self.chunks,
            "errors": self.errors,
        }


class _Batcher:
    """Merges single requests from many threads into batched calls, for a teacher that
    generates a batch at once (the in-process model): one call serves up to ``size`` chains."""

    def __init__(self, teacher: Teacher, size: int, wait: float = 0.02) -> None:
        self.teacher = teacher
        self.size = size
        self.wait = wait
        self.cond = threading.Condition()
        self.queue: list[tuple[list[dict[str, str]], GenParams, Future[Completion | Failure]]] = []
        self.busy = False

    def ask(self, messages: list[dict[str, str]], params: GenParams) -> Completion | Failure:
        future: Future[Completion | Failure] = Future()
        with self.cond:
            self.queue.append((messages, params, future))
            self.cond.notify_all()
        self._drain()
        return future.result()

    def _drain(self) -> None:
        while True:
            with self.cond:
                if self.busy or not self.queue:
                    return
                self.busy = True
                deadline = time.monotonic() + self.wait
                while len(self.queue) < self.size and time.monotonic() < deadline:
                    self.cond.wait(max(0.0, deadline - time.monotonic()))
                params = self.queue[0][1]
                batch = [q for q in self.queue if q[1] == params][: self.size]
                for item in batch:
                    self.queue.remove(item)
            try:
                answers = self.teacher.chat([m for m, _, _ in batch], params)
                for (_, _, future), answer in zip(batch, answers, strict=True):
                    future.set_result(answer)
            except BaseException as exc:  # every waiter must wake up
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()


class _CountingTeacher:
    """Calls the teacher for one leaf, counting calls and tokens, thread-safe."""

    def __init__(
        self,
        teacher: Teacher,
        result: LeafResult,
        progress: Progress | None,
        deadline: float | None = None,
    ) -> None:
        self.teacher = teacher
        self.result = result
        self.progress = progress
        self.deadline = deadline
        self.lock = threading.Lock()
        self.stages: Counter[str] = Counter()
        size = int(getattr(teacher, "batch_size", 1) or 1)
        self.batcher = _Batcher(teacher, size) if size > 1 else None

    def ask(
        self, stage: str, messages: list[dict[str, str]], params: GenParams
    ) -> Completion | Failure:
        if self.deadline is not None and time.monotonic() > self.deadline:
            return Failure("the time limit for this run was reached")
        if self.batcher is not None:
            answer = self.batcher.ask(messages, params)
        else:
            (answer,) = self.teacher.chat([messages], params)
        with self.lock:
            self.result.calls += 1
            self.stages[stage] += 1
            if isinstance(answer, Completion):
                self.result.prompt_tokens += answer.prompt_tokens
                self.result.completion_tokens += answer.completion_tokens
            stages = dict(self.stages)
        if self.progress:
            self.progress("call", {"leaf": self.result.leaf, "stage": stage, "stages": stages})
        return answer


class _TaskPool:
    """A thread pool whose tasks may submit more tasks; :meth:`wait` returns when all are done."""

    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="labbot-gen")
        self.pending = 0
        self.cond = threading.Condition()
        self.errors: list[BaseException] = []

    def submit(self, fn: Callable[[], None]) -> None:
        with self.cond:
            self.pending += 1
        future: Future[None] = self.pool.submit(fn)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        exc = future.exception()
        with self.cond:
            if exc is not None:
                self.errors.append(exc)
            self.pending -= 1
            self.cond.notify_all()

    def wait(self) -> None:
        with self.cond:
            while self.pending:
                self.cond.wait()
        self.pool.shutdown(wait=True)
        if self.errors:
            raise self.errors[0]


def _text(answer: Completion | Failure) -> str | None:
    return answer.text.strip() if isinstance(answer, Completion) else None


def _examples(leaf: Leaf, limit: int = 3) -> str:
    return "\n".join(f"Q: {s.question}" for s in leaf.seeds[:limit])


def _qa_examples(leaf: Leaf, skip: int | None = None, limit: int = 3) -> str:
    chosen = [s for i, s in enumerate(leaf.seeds) if i != skip][:limit]
    return "\n\n".join(f"Request: {s.question}\nAnswer: {s.answer}" for s in chosen)


class _LeafChains:
    """The chains of teacher calls for one leaf."""

    def __init__(
        self,
        leaf: Leaf,
        teacher: Teacher,
        cfg: GenerateConfig,
        tasks: _TaskPool,
        result: LeafResult,
        progress: Progress | None,
        deadline: float | None = None,
    ) -> None:
        self.leaf = leaf
        self.cfg = cfg
        self.tasks = tasks
        self.result = result
        self.asker = _CountingTeacher(teacher, result, progress, deadline)
        self.teacher_id = teacher.identity
        self.seen: set[str] = {prompts.normalise(qa.question) for qa in leaf.seed_questions()}
        self.lock = threading.Lock()
        self.gen = GenParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed)
        self.judge = GenParams(max_tokens=8, temperature=0.0, seed=cfg.seed)
        # Answers stop where a weak teacher starts inventing the next example.
        self.answer_params = GenParams(
            max_tokens=cfg.max_tokens,
            temperature=0.0,
            seed=cfg.seed,
            stop=("\nRequest:", "\nQuestion:", "\nQ:", "\nExample:", "\nText:"),
        )

    # -- helpers ---------------------------------------------------------------------------

    def new_sample(
        self, question: str, seed: int, chunk: int | None = None, context: str = ""
    ) -> Sample | None:
        """A candidate, or ``None`` (counted as a duplicate) when the question was seen."""
        sample = Sample(
            id=uuid.uuid4().hex[:12],
            leaf=self.leaf.path,
            kind=self.leaf.kind,
            question=question,
            context=context,
            seed_index=seed,
            chunk_index=chunk,
            teacher=self.teacher_id,
        )
        key = prompts.normalise(question)
        with self.lock:
            if len(self.result.samples) >= self.cfg.samples:
                return None
            self.result.samples.append(sample)
            duplicate = key in self.seen
            self.seen.add(key)
        if duplicate:
            sample.reject("dedupe", "the same question was already generated or is a seed")
            return None
        if len(question.split()) < 3:
            sample.reject("rules", "the question is too short to be useful")
            return None
        sample.passed("dedupe")
        return sample

    def critic(self, sample: Sample, name: str, template: str, **values: object) -> bool:
        if not self.cfg.critic:
            return True
        messages = prompts.render(template, **values)
        sample.prompt_hashes[name] = prompts.message_hash(messages)
        text = _text(self.asker.ask(name, messages, self.judge))
        if text is None:
            sample.reject(name, "the critic request failed")
            return False
        ok = prompts.verdict(text)
        if ok is None:
            sample.reject(name, f"the critic gave no YES/NO verdict: {text[:60]!r}")
            return False
        if not ok:
            sample.reject(name, "the critic said NO")
            return False
        sample.passed(name)
        return True

    def answer_rules(self, sample: Sample, answer: str | None) -> bool:
        if answer is None:
            sample.reject("answer", "the teacher request failed")
            return False
        if not answer:
            sample.reject("answer", "the teacher wrote an empty answer")
            return False
        if prompts.normalise(answer) == prompts.normalise(sample.question):
            sample.reject("answer", "the answer repeats the question")
            return False
        sample.answer = answer
        sample.passed("answer")
        return True

    def keep(self, sample: Sample) -> None:
        if sample.rejected_by is None:
            sample.kept = True

    # -- freeform ----------------------------------------------------------------------------

    def start(self, documents: Sequence[str]) -> None:
        seeds = len(self.leaf.seeds)
        if self.leaf.kind == KNOWLEDGE:
            self.start_knowledge(documents)
            return
        # As many seeds as the budget needs (each call asks for up to questions_per_call
        # questions), spread over the leaf's examples.
        used = min(seeds, max(1, -(-self.cfg.samples // self.cfg.questions_per_call)))
        picked = sorted({round(k * (seeds - 1) / max(1, used - 1)) for k in range(used)})
        per_seed = max(1, -(-self.cfg.samples // len(picked)))
        for i in picked:
            if self.leaf.kind == GROUNDED:
                self.tasks.submit(partial(self.grounded_seed, i, per_seed))
            else:
                self.tasks.submit(partial(self.freeform_seed, i, per_seed))

    def freeform_seed(self, i: int, count: int) -> None:
        messages = prompts.render(
            "freeform_questions",
            task=self.leaf.task_description,
            examples=_examples(self.leaf, 3)
            if i == 0
            else f"Q: {self.leaf.seeds[i].question}\n" + _examples(self.leaf, 2),
            count=min(count, self.cfg.questions_per_call),
        )
        text = _text(self.asker.ask("questions", messages, self.gen)) or ""
        for question in prompts.parse_lines(text, "Q:")[:count]:
            sample = self.new_sample(question, i)
            if sample is not None:
                sample.prompt_hashes["questions"] = prompts.message_hash(messages)
                self.tasks.submit(partial(self.freeform_sample, sample))

    def freeform_sample(self, sample: Sample) -> None:
        task = self.leaf.task_description
        if not self.critic(
            sample, "critic_question", "critic_question", task=task, question=sample.question
        ):
            return
        messages = prompts.render(
            "freeform_answer", task=task, examples=_qa_examples(self.leaf), question=sample.question
        )
        sample.prompt_hashes["answer"] = prompts.message_hash(messages)
        if not self.answer_rules(
            sample, _text(self.asker.ask("answer", messages, self.answer_params))
        ):
            return
        if self.critic(
            sample,
            "critic_answer",
            "critic_answer",
            task=task,
            question=sample.question,
            answer=sample.answer,
        ):
            self.keep(sample)

    # -- grounded ----------------------------------------------------------------------------

    def grounded_seed(self, i: int, count: int) -> None:
        seed = self.leaf.seeds[i]
        task = self.leaf.task_description
        messages = prompts.render("grounded_context", task=task, context=seed.context or "")
        context = _text(self.asker.ask("context", messages, self.gen)) or ""
        if len(context.split()) < 15:
            with self.lock:
                self.result.errors.append(f"seed {i + 1}: the teacher wrote no usable context")
            return
        qmessages = prompts.render(
            "grounded_questions",
            task=task,
            context=context,
            example_question=seed.question,
            count=min(count, self.cfg.questions_per_call),
        )
        text = _text(self.asker.ask("questions", qmessages, self.gen)) or ""
        for question in prompts.parse_lines(text, "Q:")[:count]:
            sample = self.new_sample(question, i, context=context)
            if sample is not None:
                sample.prompt_hashes["context"] = prompts.message_hash(messages)
                sample.prompt_hashes["questions"] = prompts.message_hash(qmessages)
                self.tasks.submit(partial(self.grounded_sample, sample))

    def grounded_sample(self, sample: Sample) -> None:
        seed = self.leaf.seeds[sample.seed_index]
        messages = prompts.render(
            "grounded_answer",
            task=self.leaf.task_description,
            example_context=seed.context or "",
            example_question=seed.question,
            example_answer=seed.answer,
            context=sample.context,
            question=sample.question,
        )
        sample.prompt_hashes["answer"] = prompts.message_hash(messages)
        if not self.answer_rules(
            sample, _text(self.asker.ask("answer", messages, self.answer_params))
        ):
            return
        if self.critic(
            sample,
            "critic_grounded",
            "critic_grounded",
            context=sample.context,
            question=sample.question,
            answer=sample.answer,
        ):
            self.keep(sample)

    # -- knowledge ---------------------------------------------------------------------------

    def start_knowledge(self, documents: Sequence[str]) -> None:
        chunks = [c for doc in documents for c in chunk_markdown(doc, self.chunk_words())]
        self.result.chunks = len(chunks)
        if not chunks:
            self.result.errors.append("no document text to generate from")
            return
        # Spend the sample budget on passages spread evenly over the documents, each asked for
        # up to questions_per_call pairs, instead of one teacher call per passage.
        used = min(len(chunks), max(1, -(-self.cfg.samples // self.cfg.questions_per_call)))
        picked = sorted({round(k * (len(chunks) - 1) / max(1, used - 1)) for k in range(used)})
        per_chunk = max(1, -(-self.cfg.samples // len(picked)))
        for j in picked:
            self.tasks.submit(partial(self.knowledge_chunk, j, chunks[j], per_chunk))

    def chunk_words(self) -> int:
        if self.cfg.chunk_words:
            return self.cfg.chunk_words
        seed = self.leaf.seeds[0]
        overhead = self.asker.teacher.count_tokens(
            prompts.render(
                "knowledge_qa",
                domain=self.leaf.domain,
                outline=self.leaf.document_outline,
                example_context=seed.context or "",
                example_qas="\n".join(f"Q: {q.question}\nA: {q.answer}" for q in seed.qas),
                chunk="",
                count=self.cfg.questions_per_call,
            )
        )
        room = self.asker.teacher.context_window - overhead - self.cfg.max_tokens - 16
        return max(40, min(400, int(room / 1.6)))  # ~1.3-1.5 tokens per English word

    def knowledge_chunk(self, j: int, chunk: str, count: int) -> None:
        i = j % len(self.leaf.seeds)
        seed = self.leaf.seeds[i]
        messages = prompts.render(
            "knowledge_qa",
            domain=self.leaf.domain,
            outline=self.leaf.document_outline,
            example_context=seed.context or "",
            example_qas="\n".join(f"Q: {q.question}\nA: {q.answer}" for q in seed.qas),
            chunk=chunk,
            count=min(count, self.cfg.questions_per_call),
        )
        text = _text(self.asker.ask("qa_pairs", messages, self.gen)) or ""
        for question, answer in prompts.parse_qa(text)[:count]:
            sample = self.new_sample(question, i, chunk=j, context=chunk)
            if sample is None:
                continue
            sample.prompt_hashes["qa_pairs"] = prompts.message_hash(messages)
            if not self.answer_rules(sample, answer):
                continue
            self.tasks.submit(partial(self.knowledge_sample, sample))

    def knowledge_sample(self, sample: Sample) -> None:
        values = {"question": sample.question, "answer": sample.answer, "chunk": sample.context}
        if not self.critic(sample, "critic_faithful", "critic_faithful", **values):
            return
        if not self.critic(
            sample,
            "critic_relevant",
            "critic_relevant",
            domain=self.leaf.domain,
            outline=self.leaf.document_outline,
            question=sample.question,
        ):
            return
        if self.critic(sample, "critic_standalone", "critic_standalone", question=sample.question):
            self.keep(sample)


# -- caching and output ------------------------------------------------------------------------


def cache_key(leaf: Leaf, documents: Sequence[str], teacher_id: str, cfg: GenerateConfig) -> str:
    """Everything that shapes a leaf's samples, hashed."""
    doc_hash = hashlib.sha256("\0".join(documents).encode()).hexdigest()
    material = {
        "leaf": leaf.content_hash,
        "documents": doc_hash,
        "teacher": teacher_id,
        "pipeline": PIPELINE_VERSION,
        "prompts": prompts.prompts_hash(),
        "params": cfg.key(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def _sample_from(data: dict[str, Any]) -> Sample:
    return Sample(**data)


def load_cached(cache_dir: Path, key: str) -> LeafResult | None:
    path = cache_dir / "generate" / f"{key}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    samples = [_sample_from(s) for s in data.pop("samples")]
    result = LeafResult(samples=samples, **data)
    result.cached = True
    return result


def store_cached(cache_dir: Path, key: str, result: LeafResult) -> None:
    folder = cache_dir / "generate"
    folder.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in asdict(result).items() if k != "cached"}
    tmp = folder / f".{key}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(data, ensure_ascii=False))
    tmp.rename(folder / f"{key}.json")


def generate_leaf(
    leaf: Leaf,
    teacher: Teacher,
    cfg: GenerateConfig,
    documents: Sequence[str] = (),
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
    deadline: float | None = None,
) -> LeafResult:
    """Generate (or load from the cache) the samples of one leaf. See :func:`generate_leaves`."""
    (result,) = generate_leaves(
        [(leaf, documents)],
        teacher,
        cfg,
        cache_dir=cache_dir,
        use_cache=use_cache,
        progress=progress,
        deadline=deadline,
    )
    return result


def generate_leaves(
    work: Sequence[tuple[Leaf, Sequence[str]]],
    teacher: Teacher,
    cfg: GenerateConfig,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
    deadline: float | None = None,
) -> list[LeafResult]:
    """Generate the samples of several leaves (each with its document texts) at once.

    Leaves whose cache key is known come from the cache with no teacher call. The others run
    their chains in one shared pool, so the teacher stays busy across leaf boundaries.
    ``deadline`` (a ``time.monotonic()`` value) stops new teacher calls once passed; unfinished
    samples are rejected with that reason and such results are not cached.
    """
    results: list[LeafResult | None] = []
    runs: list[tuple[int, str, _LeafChains]] = []
    workers = max(
        int(getattr(teacher, "concurrency", 1) or 1), int(getattr(teacher, "batch_size", 1) or 1)
    )
    tasks = _TaskPool(workers)
    start = time.monotonic()
    for leaf, documents in work:
        key = cache_key(leaf, documents, teacher.identity, cfg)
        cached = load_cached(cache_dir, key) if cache_dir is not None and use_cache else None
        if cached is not None:
            if progress:
                progress("cached", {"leaf": leaf.path})
            results.append(cached)
            continue
        result = LeafResult(leaf=leaf.path, slug=leaf.slug, kind=leaf.kind, samples=[])
        run = _LeafChains(leaf, teacher, cfg, tasks, result, progress, deadline)
        runs.append((len(results), key, run))
        results.append(result)
        run.start(documents)
    tasks.wait()
    elapsed = time.monotonic() - start
    timed_out = deadline is not None and time.monotonic() > deadline
    for _, key, run in runs:
        result = run.result
        result.seconds = elapsed
        result.samples.sort(key=lambda s: (s.seed_index, s.chunk_index or 0, s.question))
        if timed_out:
            result.errors.append("stopped at the time limit")
        elif cache_dir is not None:
            store_cached(cache_dir, key, result)
    return [r for r in results if r is not None]


def write_outputs(results: Sequence[LeafResult], out_dir: Path, teacher_id: str) -> dict[str, Any]:
    """``<slug>.jsonl`` (kept samples as chat records), ``<slug>.samples.jsonl`` (every sample
    with its provenance) and ``summary.json``; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    leaves = []
    for r in results:
        with open(out_dir / f"{r.slug}.jsonl", "w", encoding="utf-8") as fh:
            for s in r.kept:
                fh.write(json.dumps(s.to_record(), ensure_ascii=False) + "\n")
        with open(out_dir / f"{r.slug}.samples.jsonl", "w", encoding="utf-8") as fh:
            for s in r.samples:
                fh.write(json.dumps(asdict(s), ensure_ascii=False) + "\n")
        leaves.append(r.counts())
    summary = {
        "teacher": teacher_id,
        "pipeline_version": PIPELINE_VERSION,
        "leaves": leaves,
        "totals": {
            "generated": sum(x["generated"] for x in leaves),
            "kept": sum(x["kept"] for x in leaves),
            "teacher_calls": sum(x["teacher_calls"] for x in leaves if not x["cached"]),
            "cached_leaves": sum(1 for x in leaves if x["cached"]),
        },
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
