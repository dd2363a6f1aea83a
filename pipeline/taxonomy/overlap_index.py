"""Near-duplicate search over short texts: normalisation, word shingles, MinHash, LSH.

This is the engine behind :mod:`pipeline.taxonomy.overlap` (which knows about taxonomy leaves, findings
and settings). Everything here is pure: texts and bytes in, results and bytes out.

Pipeline of one text
    :func:`normalise` (Unicode NFKC, case folding, apostrophes dropped, other punctuation
    removed, symbols kept as tokens, any whitespace run one space: so ``|`` and ``>`` block
    scalars, re-wrapped lines, curly quotes and changed case all read the same) ->
    :func:`shingles` (hashes of every run of :data:`SHINGLE` consecutive words; a text shorter
    than that is one shingle) -> :func:`signatures` (:data:`NUM_PERM` MinHash values, whose
    agreement rate estimates the Jaccard similarity of two shingle sets).

The index
    :class:`OverlapIndex` holds one signature per *unit* (a seed text of a leaf) and finds,
    for query signatures, every indexed unit whose estimated similarity reaches a threshold
    without comparing against all of them: the signature is cut into :data:`BANDS` bands of
    :data:`ROWS` values; two units become candidates when any band agrees exactly (the
    probability is ``1 - (1 - J**3)**42``: 0.995 at J = 0.5, 0.93 at J = 0.4, 0.01 at J = 0.07)
    and candidates are then checked on the whole signature. Each band's hashes are kept sorted,
    so a lookup is a binary search; leaves added since the last sort sit in a small unsorted
    tail that is scanned, and removed ones are masked, so add/remove/replace never rebuild
    the index (it re-sorts itself when the tail grows past a quarter of the sorted part).

Why not ``datasketch``: it would pull in scipy, its LSH keeps one Python dict entry per
(unit, band) (about 100 bytes each: ~100 MB for a 3,000-leaf tree) and it persists by
pickling, which must never be loaded from a cache file. The ~50 lines of numpy here keep the
index a few MB, load it from a plain ``.npz`` without pickle, and make every constant part of
the file format.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Words per shingle. Three words keep common two-word phrases ("what is", "of the") from
#: making texts on one topic look alike, while a one-word edit still leaves most shingles.
SHINGLE = 3
#: MinHash values per signature (standard error of the estimate: 0.044 at J = 0.5).
NUM_PERM = 128
#: LSH layout: BANDS bands of ROWS values (126 of the 128 values).
ROWS = 3
BANDS = 42
FORMAT = "labbot-overlap-index"
FORMAT_VERSION = 1
#: Shingles hashed per numpy block, bounding memory for a huge text (block x NUM_PERM x 8 B).
_BLOCK = 4096

_M64 = (1 << 64) - 1
U64 = NDArray[np.uint64]
U32 = NDArray[np.uint32]


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _constants(count: int, salt: int, odd: bool = False) -> U64:
    """Fixed pseudo-random 64-bit constants (our own generator: stable across numpy versions)."""
    values = [_splitmix64(salt * 1_000_003 + i) for i in range(count)]
    if odd:
        values = [v | 1 for v in values]
    return np.array(values, dtype=np.uint64)


_PERM_A = _constants(NUM_PERM, 1, odd=True)
_PERM_B = _constants(NUM_PERM, 2)
_SHINGLE_MUL = _constants(SHINGLE, 3, odd=True)
_BAND_MUL = _constants(ROWS, 4, odd=True)


def _mix(x: U64) -> U64:
    """The splitmix64 finaliser, vectorised (uint64 arithmetic wraps, as intended)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


# --- text -------------------------------------------------------------------------------------

_APOSTROPHES = {ord(c): None for c in "'\u2018\u2019\u02bc\u02bb`\u00b4"}
_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")


def tokens(text: str) -> list[str]:
    """The words of a text after normalisation (see :func:`normalise`)."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    out = []
    for tok in _TOKEN.findall(text):
        if len(tok) == 1 and not tok.isalnum() and unicodedata.category(tok).startswith("P"):
            continue  # punctuation goes; symbols (+ = < $ ...) stay, they carry meaning
        out.append(tok)
    return out


def normalise(text: str) -> str:
    """Text as compared: NFKC, case-folded, punctuation removed, whitespace runs one space.

    >>> normalise("  Don’t  PANIC!\\n“Really?”  ")
    'dont panic really'
    >>> normalise("2 + 2 = 4") == normalise("2+2=4")
    True
    """
    return " ".join(tokens(text))


_WORD_CACHE: dict[str, int] = {}


def _word_hash(word: str) -> int:
    h = _WORD_CACHE.get(word)
    if h is None:
        if len(_WORD_CACHE) > 500_000:
            _WORD_CACHE.clear()
        digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        h = _WORD_CACHE[word] = int.from_bytes(digest, "little")
    return h


def shingles(text: str, k: int = SHINGLE) -> U64:
    """Sorted unique 64-bit hashes of the text's ``k``-word shingles (empty for no words)."""
    words = np.array([_word_hash(w) for w in tokens(text)], dtype=np.uint64)
    if words.size == 0:
        return words
    if words.size < k:  # a short text is one shingle of all its words
        acc = np.zeros(1, dtype=np.uint64)
        for i, w in enumerate(words):
            acc = acc * np.uint64(0x100000001B3) + w + np.uint64(i)
        return _mix(acc)
    n = words.size - k + 1
    acc = np.zeros(n, dtype=np.uint64)
    for j in range(k):
        acc = acc + words[j : j + n] * _SHINGLE_MUL[j]
    return np.unique(_mix(acc))


def signature(shingle_hashes: U64) -> U32:
    """The MinHash signature of a shingle set (all ``0xFFFFFFFF`` for an empty set)."""
    sig = np.full(NUM_PERM, 0xFFFFFFFF, dtype=np.uint32)
    for start in range(0, shingle_hashes.size, _BLOCK):
        block = shingle_hashes[start : start + _BLOCK, None]
        values = ((block * _PERM_A[None, :] + _PERM_B[None, :]) >> np.uint64(32)).astype(np.uint32)
        np.minimum(sig, values.min(axis=0), out=sig)
    return sig


def signatures(texts: Sequence[str]) -> U32:
    """Signatures of several texts, one row each."""
    out = np.empty((len(texts), NUM_PERM), dtype=np.uint32)
    for i, text in enumerate(texts):
        out[i] = signature(shingles(text))
    return out


def similarity(a: U32, b: U32) -> float:
    """Estimated Jaccard similarity of the shingle sets behind two signatures."""
    return float(np.count_nonzero(a == b)) / NUM_PERM


def band_hashes(sigs: U32) -> U64:
    """One 64-bit hash per band of each signature: shape (n, BANDS)."""
    rows = sigs[:, : BANDS * ROWS].astype(np.uint64).reshape(len(sigs), BANDS, ROWS)
    acc = (rows * _BAND_MUL[None, None, :]).sum(axis=2, dtype=np.uint64)
    return _mix(acc)


#: Rows the unsorted tail may hold before a full re-sort (see ``OverlapIndex._sort``).
_TAIL_ROWS = 2048
_BAND_SHIFT = np.uint64(64 - 6)  # 42 bands fit in 6 bits


def _keys_of(bands: U64) -> U64:
    """Band hashes as sortable keys: the band number in the top 6 bits, 58 bits of hash."""
    numbers = np.arange(bands.shape[1], dtype=np.uint64)[None, :] << _BAND_SHIFT
    return numbers | (bands >> np.uint64(6))


def _band_keys(bands: U64, start: int, end: int) -> tuple[U64, NDArray[np.int64]]:
    """Sorted keys of rows ``[start, end)`` of ``bands``, with the row of each key."""
    keys = _keys_of(bands[start:end]).ravel()
    order = np.argsort(keys, kind="stable")
    return keys[order], order // BANDS + start


def band_pairs(sigs: U32, threshold: float, per_bucket: int = 32) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, similarity)``, ``i < j``, of rows of ``sigs`` at or above ``threshold``.

    Candidates come from LSH buckets; inside one bucket each row is compared with at most
    ``per_bucket`` rows before it, so the cost stays linear even when thousands of rows agree.
    """
    n = len(sigs)
    if n < 2:
        return []
    bands = band_hashes(sigs)
    cand: set[tuple[int, int]] = set()
    for b in range(BANDS):
        order = np.argsort(bands[:, b], kind="stable")
        col = bands[order, b]
        starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
        ends = np.r_[starts[1:], n]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if e - s < 2:
                continue
            members = sorted(order[s:e].tolist())
            for pos, j in enumerate(members):
                for i in members[max(0, pos - per_bucket) : pos]:
                    cand.add((i, j))
    out = []
    for i, j in sorted(cand):
        sim = similarity(sigs[i], sigs[j])
        if sim >= threshold:
            out.append((i, j, sim))
    return out


# --- the index --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unit:
    """One seed text of a leaf and where it is.

    ``yaml_path`` is the JSON path of its node (``.seed_examples[2]``, or for knowledge
    ``.seed_examples[0].questions_and_answers[1]`` and ``.seed_examples[0].context``);
    ``line``/``column`` are 1-based; ``text`` is what is compared (not kept in the index).
    """

    yaml_path: str
    line: int
    column: int
    text: str = ""


@dataclass(frozen=True, slots=True)
class OverlapLeaf:
    """The comparable content of one leaf: its path (relative to the taxonomy root), its units,
    and where its ``seed_examples`` key is (the place a whole-leaf finding points at)."""

    path: str
    units: tuple[Unit, ...]
    line: int = 1
    column: int = 1
    fingerprint: str = ""  # e.g. the blob SHA: lets a caller skip re-indexing unchanged leaves


@dataclass(frozen=True, slots=True)
class IndexedLeaf:
    """What the index keeps of a leaf: no texts, only places (units with no words are left
    out: they have nothing to compare)."""

    path: str
    units: tuple[Unit, ...]
    line: int
    column: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class UnitMatch:
    """Query unit ``query`` (an index into the query's units) near-matches ``unit`` of the
    indexed leaf ``leaf`` with estimated Jaccard ``similarity`` (or, ``by_meaning``, the cosine
    similarity of sentence embeddings: a paraphrase found by the semantic pass)."""

    query: int
    leaf: IndexedLeaf
    unit: Unit
    similarity: float
    by_meaning: bool = False


def leaf_signatures(leaf: OverlapLeaf) -> tuple[tuple[Unit, ...], U32]:
    """The units of a leaf that have words, and their signatures (one numpy pass for all)."""
    kept, parts = [], []
    for unit in leaf.units:
        sh = shingles(unit.text)
        if sh.size:
            kept.append(unit)
            parts.append(sh)
    return tuple(kept), set_signatures(parts)


def set_signatures(sets: Sequence[U64]) -> U32:
    """Signatures of several non-empty shingle sets, one row each."""
    out = np.full((len(sets), NUM_PERM), 0xFFFFFFFF, dtype=np.uint32)
    if not sets:
        return out
    flat = np.concatenate(sets)
    owner = np.repeat(np.arange(len(sets)), [len(x) for x in sets])
    for start in range(0, flat.size, _BLOCK):
        block, who = flat[start : start + _BLOCK, None], owner[start : start + _BLOCK]
        values = ((block * _PERM_A[None, :] + _PERM_B[None, :]) >> np.uint64(32)).astype(np.uint32)
        firsts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
        groups = who[firsts]
        out[groups] = np.minimum(out[groups], np.minimum.reduceat(values, firsts, axis=0))
    return out


def close_pairs(sigs: U32, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, similarity)``, ``i < j``, of rows of ``sigs`` at or above ``threshold``:
    all pairs compared for up to 256 rows, LSH buckets (:func:`band_pairs`) beyond."""
    n = len(sigs)
    if n > 256:
        return band_pairs(sigs, threshold)
    agree = (sigs[:, None, :] == sigs[None, :, :]).sum(axis=2) / NUM_PERM
    i, j = np.nonzero(np.triu(agree >= threshold, 1))
    return [(a, b, float(agree[a, b])) for a, b in zip(i.tolist(), j.tolist(), strict=True)]


class OverlapIndex:
    """MinHash signatures of every unit of a tree's leaves, searchable by LSH.

    ``key`` names the tree the index was built from (the caller's choice: the git tree SHA of
    the default branch); :meth:`from_bytes` refuses a file with another key.
    """

    def __init__(self, key: str = "") -> None:
        self.key = key
        self._sig: U32 = np.empty((0, NUM_PERM), dtype=np.uint32)
        self._band: U64 = np.empty((0, BANDS), dtype=np.uint64)
        self._slot: NDArray[np.int32] = np.empty(0, dtype=np.int32)
        self._n = 0  # rows in use; rows are never reused until a compaction
        self._dead = 0
        self._leaves: list[IndexedLeaf | None] = []  # by slot
        self._rows: list[NDArray[np.int64]] = []  # by slot: its unit rows
        self._by_path: dict[str, int] = {}
        # Band keys (band number in the top bits) sorted, with their rows: rows [0, m) in the
        # main part, rows [m, t) in a small tail part re-sorted on its own; rows added since
        # (up to n) are sorted in at the next query.
        self._main: tuple[U64, NDArray[np.int64]] = _band_keys(self._band, 0, 0)
        self._tail: tuple[U64, NDArray[np.int64]] = self._main
        self._m = 0
        self._t = 0

    # -- contents --

    def __len__(self) -> int:
        return len(self._by_path)

    def __contains__(self, path: object) -> bool:
        return path in self._by_path

    def paths(self) -> list[str]:
        return sorted(self._by_path)

    def get(self, path: str) -> IndexedLeaf | None:
        slot = self._by_path.get(path)
        return None if slot is None else self._leaves[slot]

    def signatures_of(self, path: str) -> U32:
        """The signatures of an indexed leaf's units (rows in the order of its units)."""
        slot = self._by_path[path]
        return self._sig[self._rows[slot]]

    @property
    def unit_count(self) -> int:
        return self._n - self._dead

    # -- updates --

    def add(self, leaf: OverlapLeaf) -> IndexedLeaf:
        """Index a leaf, replacing any leaf at the same path."""
        units, sigs = leaf_signatures(leaf)
        return self.add_signed(leaf, units, sigs)

    def add_signed(self, leaf: OverlapLeaf, units: Sequence[Unit], sigs: U32) -> IndexedLeaf:
        """Index a leaf whose unit signatures are already computed (see :func:`leaf_signatures`)."""
        self.remove(leaf.path)
        stored = IndexedLeaf(
            leaf.path,
            tuple(Unit(u.yaml_path, u.line, u.column) for u in units),
            leaf.line,
            leaf.column,
            leaf.fingerprint,
        )
        slot = len(self._leaves)
        self._leaves.append(stored)
        self._by_path[leaf.path] = slot
        count = len(units)
        self._reserve(self._n + count)
        rows = np.arange(self._n, self._n + count, dtype=np.int64)
        if count:
            self._sig[rows] = sigs
            self._band[rows] = band_hashes(sigs)
            self._slot[rows] = slot
        self._rows.append(rows)
        self._n += count
        return stored

    def remove(self, path: str) -> bool:
        """Forget a leaf; ``False`` when it was not indexed."""
        slot = self._by_path.pop(path, None)
        if slot is None:
            return False
        rows = self._rows[slot]
        self._slot[rows] = -1
        self._dead += len(rows)
        self._leaves[slot] = None
        self._rows[slot] = np.empty(0, dtype=np.int64)
        if self._dead > max(512, self._n // 3):
            self._compact()
        return True

    def prepare(self) -> None:
        """Sort rows added since the last query in now (queries otherwise do it first)."""
        if self._t != self._n:
            self._sort()

    def _reserve(self, rows: int) -> None:
        cap = len(self._sig)
        if rows <= cap:
            return
        cap = max(rows, cap * 2, 1024)
        self._sig = np.resize(self._sig, (cap, NUM_PERM))
        self._band = np.resize(self._band, (cap, BANDS))
        self._slot = np.resize(self._slot, cap)

    def _compact(self) -> None:
        """Drop removed rows and empty slots; renumber."""
        leaves = [x for x in self._leaves if x is not None]
        rows_list = [r for x, r in zip(self._leaves, self._rows, strict=True) if x is not None]
        keep = np.concatenate(rows_list) if rows_list else np.empty(0, dtype=np.int64)
        self._sig = self._sig[keep].copy()
        self._band = self._band[keep].copy()
        self._leaves = list(leaves)
        self._rows, start = [], 0
        slots = np.empty(len(keep), dtype=np.int32)
        for slot, r in enumerate(rows_list):
            self._rows.append(np.arange(start, start + len(r), dtype=np.int64))
            slots[start : start + len(r)] = slot
            start += len(r)
        self._slot = slots
        self._by_path = {x.path: i for i, x in enumerate(leaves)}
        self._n, self._dead = len(keep), 0
        self._sort(full=True)

    def _sort(self, full: bool = False) -> None:
        """Sort every row in: all of them when asked or when the tail would pass a quarter of
        the main part (amortised: each row is re-sorted O(log n) times), else only the tail."""
        if full or self._n - self._m > max(_TAIL_ROWS, self._m // 4):
            self._main = _band_keys(self._band, 0, self._n)
            self._m = self._n
        self._tail = _band_keys(self._band, self._m, self._n)
        self._t = self._n

    # -- queries --

    def query(self, sigs: U32, threshold: float, exclude: Iterable[str] = ()) -> list[UnitMatch]:
        """Every indexed unit whose estimated similarity with a query signature (a row of
        ``sigs``) is at least ``threshold``, leaving out the leaves at ``exclude`` paths."""
        if len(sigs) == 0 or self._n == 0:
            return []
        self.prepare()
        qk = _keys_of(band_hashes(sigs)).ravel()  # (Q * BANDS,), query-major
        q_parts, r_parts = [], []
        for keys, rows in (self._main, self._tail):
            lo = np.searchsorted(keys, qk, "left")
            counts = np.searchsorted(keys, qk, "right") - lo
            total = int(counts.sum())
            if not total:
                continue
            starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
            r_parts.append(rows[starts + np.arange(total)])
            q_parts.append(np.repeat(np.arange(len(qk), dtype=np.int64) // BANDS, counts))
        if not r_parts:
            return []
        pair = np.unique(np.concatenate(q_parts) * self._n + np.concatenate(r_parts))
        q_all, r_all = pair // self._n, pair % self._n
        slots = self._slot[r_all]
        keep = slots >= 0
        skip = [self._by_path[p] for p in exclude if p in self._by_path]
        if skip:
            keep &= ~np.isin(slots, skip)
        q_all, r_all, slots = q_all[keep], r_all[keep], slots[keep]
        sims = np.count_nonzero(sigs[q_all] == self._sig[r_all], axis=1) / NUM_PERM
        good = np.flatnonzero(sims >= threshold)
        out = []
        for i in good.tolist():
            row, slot = int(r_all[i]), int(slots[i])
            leaf = self._leaves[slot]
            assert leaf is not None
            pos = int(row - self._rows[slot][0])
            out.append(UnitMatch(int(q_all[i]), leaf, leaf.units[pos], float(sims[i])))
        return out

    # -- persistence --

    def to_bytes(self) -> bytes:
        """A compact ``.npz`` (no pickle): signatures, leaf places and the format's constants."""
        if self._dead:
            self._compact()
        leaves = [x for x in self._leaves if x is not None]
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "key": self.key,
            "params": _params(),
            "leaves": [
                [
                    x.path,
                    x.fingerprint,
                    x.line,
                    x.column,
                    [[u.yaml_path, u.line, u.column] for u in x.units],
                ]
                for x in leaves
            ],
        }
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            sig=self._sig[: self._n],
            slot=self._slot[: self._n],
            meta=np.frombuffer(json.dumps(meta, ensure_ascii=False).encode(), dtype=np.uint8),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, key: str | None = None) -> OverlapIndex | None:
        """The index stored by :meth:`to_bytes`, or ``None`` when the bytes are not a valid
        index of this format, or (when ``key`` is given) were built for another tree; the
        caller then rebuilds."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                sig, slot, raw = z["sig"], z["slot"], z["meta"]
            meta = json.loads(bytes(raw.astype(np.uint8)).decode())
            if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
                return None
            if meta.get("params") != _params() or (key is not None and meta.get("key") != key):
                return None
            if sig.dtype != np.uint32 or sig.ndim != 2 or sig.shape[1] != NUM_PERM:
                return None
            if slot.shape != (len(sig),):
                return None
            index = cls(str(meta["key"]))
            slot = slot.astype(np.int64)
            entries = meta["leaves"]
            order = np.argsort(slot, kind="stable")
            bounds = np.searchsorted(slot[order], np.arange(len(entries) + 1))
            index._sig = sig[order].copy()
            index._band = band_hashes(index._sig)
            index._slot = slot[order].astype(np.int32)
            index._n = len(sig)
            for i, (path, fp, line, col, units) in enumerate(entries):
                start, end = int(bounds[i]), int(bounds[i + 1])
                if end - start != len(units) or str(path) in index._by_path:
                    return None
                index._leaves.append(
                    IndexedLeaf(
                        str(path),
                        tuple(Unit(str(p), int(ln), int(c)) for p, ln, c in units),
                        int(line),
                        int(col),
                        str(fp),
                    )
                )
                index._rows.append(np.arange(start, end, dtype=np.int64))
                index._by_path[str(path)] = i
            if int(bounds[-1]) != len(sig) or (len(sig) and int(slot.min()) < 0):
                return None
            index._sort(full=True)
            return index
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError):
            return None


def _params() -> dict[str, Any]:
    return {"shingle": SHINGLE, "num_perm": NUM_PERM, "rows": ROWS, "bands": BANDS}
