"""``labbot build``: the whole taxonomy to a trained, evaluated model, in stages.

validate -> generate -> mix -> phase1 -> phase2 -> evaluate -> artifacts -> manifest

Stages talk only through the run directory. Each finished stage writes ``<stage>/stage.json``
with the hash of its inputs; ``--resume`` skips a finished stage whose inputs are unchanged and
continues an interrupted training phase from its last checkpoint. ``manifest.json`` is written
last: a run without it is incomplete.

Under ``torchrun`` or ``accelerate launch`` every process runs this same code: rank 0 alone runs
the stages that read the taxonomy, call the teacher, evaluate and write files, and shares their
results; the training phases run on every rank (see pipeline/training/distributed.py).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.config import RepoConfig
from pipeline.errors import BuildError as BuildError  # re-exported for callers
from pipeline.errors import RunDirectoryInUse as RunDirectoryInUse
from pipeline.redact import redact_config, strip_credentials
from pipeline.taxonomy.leaves import Leaf, load_leaves
from pipeline.training import distributed
from pipeline.training import evaluate as ev
from pipeline.training.config import BuildConfig

Log = Callable[[str], None]


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_hash(model_dir: Path) -> str:
    weights = sorted(model_dir.glob("*.safetensors"))
    return _hash([file_hash(w) for w in weights]) if weights else _hash(str(model_dir))


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("labbot", "torch", "transformers", "peft", "accelerate", "jsonschema"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def taxonomy_commit(root: Path) -> dict[str, Any]:
    """The git commit of the taxonomy, and whether its working tree differs from it."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return {"sha": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


class Build:
    """One build in one run directory."""

    def __init__(
        self,
        root: Path,
        repo_config: RepoConfig,
        cfg: BuildConfig,
        run_dir: Path,
        cache_dir: Path,
        *,
        resume: bool = False,
        log: Log = lambda _msg: None,
        progress: Callable[[str, dict[str, Any]], None] | None = None,
        teacher_api_key: str | None = None,
    ) -> None:
        self.root = root
        self.teacher_api_key = teacher_api_key  # sent as a bearer token, never written down
        self.repo_config = repo_config
        self.cfg = cfg
        self.run = run_dir
        self.cache = cache_dir
        self.resume = resume
        self.log = log
        self.progress = progress
        self.leaves: list[Leaf] = []
        self.timings: dict[str, float] = {}
        self.dist = distributed.Dist()

    # -- stage bookkeeping -------------------------------------------------------------------

    def _done(self, stage: str, inputs: str) -> bool:
        marker = self.run / stage / "stage.json"
        if not (self.resume and marker.is_file()):
            return False
        try:
            return bool(_read_json(marker).get("inputs") == inputs)
        except (OSError, ValueError):
            return False

    def _finish(self, stage: str, inputs: str, info: dict[str, Any]) -> None:
        _write_json(
            self.run / stage / "stage.json", {"inputs": inputs, "finished_at": time.time(), **info}
        )

    def _stage(
        self,
        stage: str,
        inputs: str,
        fn: Callable[[], dict[str, Any]],
        *,
        every_rank: bool = False,
    ) -> dict[str, Any]:
        """Run a stage once (rank 0; ``every_rank`` for training) or skip it when resumed."""
        d = self.dist
        if d.on_rank_zero(stage, lambda: self._done(stage, inputs)):
            self.log(f"{stage}: done in an earlier run, skipped")
            stored: dict[str, Any] = d.on_rank_zero(
                stage, lambda: _read_json(self.run / stage / "stage.json")
            )
            return stored
        self.log(f"{stage}: running")
        start = time.monotonic()
        info = d.on_every_rank(stage, fn) if every_rank else d.on_rank_zero(stage, fn)
        self.timings[stage] = round(time.monotonic() - start, 1)
        d.on_rank_zero(stage, lambda: self._finish(stage, inputs, info))
        self.log(f"{stage}: finished in {self.timings[stage]:.0f} s")
        return info

    # -- the stages --------------------------------------------------------------------------

    def run_all(self) -> dict[str, Any]:
        self.dist = d = distributed.init()
        if not d.is_main:  # one log, from rank 0
            self.log = lambda _msg: None
            self.progress = None
        d.on_rank_zero("preparing the run directory", self._prepare_run_dir)
        started = time.monotonic()
        v = self._stage("validate", _hash([self.cfg.as_dict(), self._tree_hash()]), self.validate)
        g = self._stage(
            "generate",
            _hash(
                [v["leaves_hash"], strip_credentials(self.cfg.teacher), asdict(self.cfg.generate)]
            ),
            self.generate,
        )
        m = self._stage(
            "mix",
            _hash([g["outputs_hash"], asdict(self.cfg.mix), self.cfg.system_prompt]),
            self.mix,
        )
        base = self.student_dir()
        p1 = self._stage(
            "phase1",
            _hash([m["phase1_hash"], asdict(self.cfg.phase1), str(base)]),
            lambda: self.train("phase1", base),
            every_rank=True,
        )
        p1_model = Path(p1["final_dir"])
        p2 = self._stage(
            "phase2",
            _hash([m["phase2_hash"], asdict(self.cfg.phase2), p1["final_hash"]]),
            lambda: self.train("phase2", p1_model),
            every_rank=True,
        )
        e = self._stage(
            "evaluate",
            _hash([p2["final_hash"], p1["final_hash"], m["held_out_hash"], asdict(self.cfg.eval)]),
            lambda: self.evaluate(base, p1_model, Path(p2["final_dir"])),
        )
        self._stage(
            "artifacts", _hash([e, p2["final_hash"]]), lambda: self.artifacts(v, g, m, p1, p2, e)
        )
        seconds = time.monotonic() - started

        def write_manifest() -> dict[str, Any]:
            manifest = self.manifest(v, g, m, p1, p2, e, seconds)
            _write_json(self.run / "manifest.json", manifest)
            return manifest

        return d.on_rank_zero("manifest", write_manifest)

    def _prepare_run_dir(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        if not self.resume and any(self.run.iterdir()):
            raise RunDirectoryInUse(self.run)
        _write_json(self.run / "config.resolved.json", redact_config(self.cfg.as_dict()))

    def _tree_hash(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.root.rglob("qna.yaml")):
            digest.update(str(path.relative_to(self.root)).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:16]

    def validate(self) -> dict[str, Any]:
        leaves, results = load_leaves(self.root, self.repo_config, profile="tree")
        invalid = [r for r in results if not r.valid]
        _write_json(self.run / "validate" / "results.json", [r.as_dict() for r in results])
        if invalid:
            raise BuildError(
                f"{len(invalid)} taxonomy file(s) have errors; fix them before building", invalid
            )
        if not leaves:
            raise BuildError(f"no qna.yaml files under {self.root}")
        self.leaves = leaves
        return {
            "leaves": [leaf.path for leaf in leaves],
            "leaves_hash": _hash([leaf.content_hash for leaf in leaves]),
            "files": len(results),
        }

    def _ensure_leaves(self) -> None:
        if not self.leaves:
            self.leaves, _ = load_leaves(self.root, self.repo_config, profile="tree")

    def generate(self) -> dict[str, Any]:
        from pipeline.sdg.generate import generate_leaves, write_outputs
        from pipeline.sdg.teacher import make_teacher
        from pipeline.taxonomy.documents import leaf_documents

        self._ensure_leaves()
        gcfg = self.cfg.generate_config()
        teacher = make_teacher(
            self.cfg.teacher,
            cache_dir=self.cache,
            concurrency=self.cfg.teacher_concurrency,
            context_window=self.cfg.teacher_context_window,
            api_key=self.teacher_api_key,
        )
        work: list[tuple[Leaf, list[str]]] = [
            (leaf, leaf_documents(leaf, self.repo_config, self.cache / "documents"))
            for leaf in self.leaves
        ]
        self.log(f"  generate: {len(work)} leaves with teacher {teacher.identity}")
        try:
            results = generate_leaves(
                work, teacher, gcfg, cache_dir=self.cache, progress=self.progress
            )
        finally:
            teacher.close()
        summary = write_outputs(results, self.run / "generate", teacher.identity)
        outputs = {r.leaf: [s.to_record() for s in r.kept] for r in results}
        _write_json(self.run / "generate" / "kept.json", outputs)
        return {
            "summary": summary["totals"],
            "teacher": teacher.identity,
            "outputs_hash": _hash(outputs),
        }

    def mix(self) -> dict[str, Any]:
        from pipeline.training.mixing import MixConfig, mix

        self._ensure_leaves()
        generated = _read_json(self.run / "generate" / "kept.json")
        m = self.cfg.mix
        result = mix(
            self.leaves,
            generated,
            MixConfig(
                replay_fraction=m.replay_fraction,
                skill_cap=m.skill_cap,
                seed=self.cfg.seed,
                system_prompt=self.cfg.system_prompt,
            ),
        )
        folder = self.run / "mix"
        _write_jsonl(folder / "phase1.jsonl", result.phase1)
        _write_jsonl(folder / "phase2.jsonl", result.phase2)
        _write_jsonl(folder / "held_out.jsonl", result.held_out)
        summary = result.summary()
        _write_json(folder / "summary.json", summary)
        return {
            "counts": summary,
            "phase1_hash": file_hash(folder / "phase1.jsonl"),
            "phase2_hash": file_hash(folder / "phase2.jsonl"),
            "held_out_hash": file_hash(folder / "held_out.jsonl"),
        }

    def student_dir(self) -> Path:
        student = self.cfg.student
        if student == "embedded":
            from pipeline.embedded import model_dir

            return model_dir(self.cache)
        path = Path(student)
        if not (path / "config.json").is_file():
            raise BuildError(
                f"student {student!r} is not a Hugging Face model folder (no config.json)"
            )
        return path

    def train(self, phase: str, init: Path) -> dict[str, Any]:
        from pipeline.training.loop import TrainConfig, train_phase

        data = _read_jsonl(self.run / "mix" / f"{phase}.jsonl")
        held = _read_jsonl(self.run / "mix" / "held_out.jsonl")
        held_records = [ev.held_out_record(h, self.cfg.system_prompt) for h in held]
        if not data:
            self.log(f"  {phase}: no data for this phase; the model passes through unchanged")
            return {
                "final_dir": str(init),
                "final_hash": _hash(str(init)),
                "skipped": True,
                "history": [],
            }
        cfg = TrainConfig(**self.cfg.phase(phase).train_params(self.cfg.seed))
        result = train_phase(
            cfg,
            init,
            data,
            held_records,
            self.run / phase,
            resume=True,
            progress=self._train_progress(phase),
        )
        if result.final_dir is None:
            raise BuildError(f"{phase} produced no model")
        final = Path(result.final_dir)
        return {
            "final_dir": str(final),
            "final_hash": self.dist.on_rank_zero(phase, lambda: _weights_hash(final)),
            "history": result.history,
            "eval_losses": result.eval_losses,
            "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
            "tokens_trained": result.tokens_trained,
            "seconds": result.seconds,
            "skipped_too_long": result.skipped_too_long,
            "samples": len(data),
        }

    def _train_progress(self, phase: str) -> Callable[[dict[str, Any]], None]:
        last = [0.0]

        def report(event: dict[str, Any]) -> None:
            now = time.monotonic()
            if now - last[0] >= 5 or event.get("final"):
                last[0] = now
                loss = event.get("loss")
                shown = f"{loss:.3f}" if isinstance(loss, float) else loss
                self.log(
                    f"  {phase}: step {event.get('step')} epoch {event.get('epoch')} loss {shown}"
                )

        return report

    def evaluate(self, base: Path, p1: Path, p2: Path) -> dict[str, Any]:
        held = _read_jsonl(self.run / "mix" / "held_out.jsonl")
        e = self.cfg.eval
        models = {"base": base, "phase1": p1, "phase2": p2}
        answers: dict[str, list[dict[str, Any]]] = {}
        scores: dict[str, dict[str, dict[str, float]]] = {}
        for name, path in models.items():
            self.log(f"  evaluate: {name} answers {len(held)} held-out questions")
            got = ev.evaluate_model(
                path,
                held,
                system_prompt=self.cfg.system_prompt,
                max_new_tokens=e.max_new_tokens,
                batch_size=e.batch_size,
            )
            answers[name] = [asdict(a) for a in got]
            scores[name] = ev.per_leaf(got)
        table = ev.compare(scores)
        _write_json(self.run / "eval" / "answers.json", answers)
        _write_json(self.run / "eval" / "leaves.json", table)
        improved = sum(1 for row in table if row.get("improved"))
        return {"leaves": len(table), "improved": improved, "table": table}

    def artifacts(
        self,
        v: dict[str, Any],
        g: dict[str, Any],
        m: dict[str, Any],
        p1: dict[str, Any],
        p2: dict[str, Any],
        e: dict[str, Any],
    ) -> dict[str, Any]:
        from pipeline.training import artifacts

        model_out = self.run / "model"
        if model_out.exists():
            shutil.rmtree(model_out)
        shutil.copytree(Path(p2["final_dir"]), model_out)
        answers = _read_json(self.run / "eval" / "answers.json")
        commit = taxonomy_commit(self.root)
        base_name = (
            self.cfg.student
            if self.cfg.student != "embedded"
            else "HuggingFaceTB/SmolLM2-135M-Instruct"
        )
        png = artifacts.loss_png(
            {"phase 1": p1.get("history", []), "phase 2": p2.get("history", [])},
            self.run / "loss.png",
        )
        report = artifacts.report_markdown(
            taxonomy=commit,
            counts=m["counts"],
            generation=g,
            phases={"phase 1": p1, "phase 2": p2},
            table=e["table"],
            answers=answers,
            png_name="loss.png" if png else None,
        )
        (self.run / "report.md").write_text(report)
        card = artifacts.model_card(
            base_model=base_name,
            taxonomy=commit,
            counts=m["counts"],
            table=e["table"],
            phases={"phase 1": p1, "phase 2": p2},
        )
        (model_out / "README.md").write_text(card)
        return {
            "model_dir": str(model_out),
            "report": str(self.run / "report.md"),
            "png": bool(png),
        }

    def manifest(
        self,
        v: dict[str, Any],
        g: dict[str, Any],
        m: dict[str, Any],
        p1: dict[str, Any],
        p2: dict[str, Any],
        e: dict[str, Any],
        seconds: float,
    ) -> dict[str, Any]:
        data_hashes = {
            name: file_hash(self.run / "mix" / f"{name}.jsonl")
            for name in ("phase1", "phase2", "held_out")
        }
        return {
            "labbot_build": 1,
            "taxonomy": {"root": str(self.root), **taxonomy_commit(self.root)},
            "leaves": v.get("leaves", []),
            "config": redact_config(self.cfg.as_dict()),
            "data": {"hashes": data_hashes, "counts": m["counts"], "generation": g.get("summary")},
            "teacher": g.get("teacher"),
            "model": {"dir": str(self.run / "model"), "phase2_hash": p2.get("final_hash")},
            "metrics": {
                "leaves": e["leaves"],
                "improved": e["improved"],
                "phase1_tokens": p1.get("tokens_trained"),
                "phase2_tokens": p2.get("tokens_trained"),
            },
            "timings": self.timings,
            "seconds": round(seconds, 1),
            "packages": package_versions(),
        }
