"""Knowledge document retrieval against real git repositories made with GitPython."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import zlib
from pathlib import Path

import git
import pytest

from pipeline.config import RepoConfig, load_config
from pipeline.errors import DocumentError
from pipeline.taxonomy.documents import check_documents, checkout, match, snapshot_folder
from pipeline.taxonomy.validate import PROFILES, validate_path
from tests.support.samples import KNOWLEDGE

ROOT = Path(__file__).resolve().parents[2]


def make_repo(path: Path, files: dict[str, str]) -> str:
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "t")
        cw.set_value("user", "email", "t@example.com")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    repo.index.add(list(files))
    return repo.index.commit("docs").hexsha


def file_config(tmp_path: Path) -> RepoConfig:
    base = RepoConfig(base_dir=tmp_path)
    docs = dataclasses.replace(base.documents, allow_file_repos=True)
    return dataclasses.replace(base, documents=docs)


def knowledge_leaf(tmp_path: Path, repo_url: str, commit: str, pattern: str) -> str:
    text = (
        KNOWLEDGE.replace("https://github.com/example/quillby", repo_url)
        .replace("0123456789abcdef0123456789abcdef01234567", commit)
        .replace('"quillby.md"', f'"{pattern}"')
    )
    leaf = tmp_path / "taxonomy" / "knowledge" / "quillby" / "qna.yaml"
    leaf.parent.mkdir(parents=True, exist_ok=True)
    leaf.write_text(text)
    (leaf.parent / "attribution.txt").write_text("x\n")
    return str(leaf)


def test_snapshot_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text("# A\n")
    first = snapshot_folder(src, tmp_path / "one")
    second = snapshot_folder(src, tmp_path / "two")
    assert first == second and len(first) == 40
    (src / "a.md").write_text("# A, edited\n")
    assert snapshot_folder(src, tmp_path / "three") != first


def test_sample_taxonomy_pins_the_snapshot_of_its_documents(tmp_path: Path) -> None:
    config = load_config(ROOT / ".github" / "labbot.yml")
    results = [
        validate_path(str(p), PROFILES["pr"], config)
        for p in sorted((ROOT / "taxonomy" / "knowledge").rglob("qna.yaml"))
    ]
    assert len(results) >= 2
    check_documents(results, config, tmp_path / "cache")
    for r in results:
        assert r.valid and not r.findings, r.findings


def test_fetch_from_file_repo_and_cache_hit(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    sha = make_repo(docs, {"quillby.md": "# Quillby\n", "notes.txt": "x\n"})
    config = file_config(tmp_path)
    co = checkout(docs.as_uri(), sha, config, tmp_path / "cache")
    assert (co.path / "quillby.md").read_text() == "# Quillby\n"
    (docs / "quillby.md").write_text("changed upstream\n")  # the cache must not notice
    again = checkout(docs.as_uri(), sha, config, tmp_path / "cache")
    assert again.path == co.path and (again.path / "quillby.md").read_text() == "# Quillby\n"
    assert [p.name for p in match(co.path, "*.md")] == ["quillby.md"]
    assert match(co.path, "../*") == []


def test_retrieval_findings_are_located(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    sha = make_repo(docs, {"quillby.md": "# Quillby\n", "other/ignore.md": "x\n"})
    config = file_config(tmp_path)
    good = knowledge_leaf(tmp_path, docs.as_uri(), sha, "quillby.md")
    result = validate_path(good, PROFILES["pr"], config)
    check_documents([result], config, tmp_path / "cache")
    assert result.valid, result.findings

    missing = knowledge_leaf(tmp_path, docs.as_uri(), sha, "nothere.md")
    result = validate_path(missing, PROFILES["pr"], config)
    check_documents([result], config, tmp_path / "cache")
    (finding,) = result.findings
    assert finding.rule == "document.not-found"
    assert (finding.line, finding.column) == (
        KNOWLEDGE.split("\n").index('    - "quillby.md"') + 1,
        7,
    )

    absent = knowledge_leaf(tmp_path, docs.as_uri(), "f" * 40, "quillby.md")
    result = validate_path(absent, PROFILES["pr"], config)
    check_documents([result], config, tmp_path / "cache")
    assert [f.rule for f in result.findings] == ["document.fetch"]


def test_file_repos_are_refused_unless_configured(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    sha = make_repo(docs, {"quillby.md": "# Q\n"})
    with pytest.raises(DocumentError):
        checkout(docs.as_uri(), sha, RepoConfig(), tmp_path / "cache")
    leaf = knowledge_leaf(tmp_path, docs.as_uri(), sha, "quillby.md")
    result = validate_path(leaf, PROFILES["pr"], RepoConfig())
    assert [f.rule for f in result.findings] == ["document.repo"]


def minimal_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with a text layer, written by hand (no PDF library needed)."""
    ops = (
        "BT /F1 12 Tf 72 720 Td 14 TL "
        + " ".join(f"({line.replace('(', '[').replace(')', ']')}) Tj T*" for line in lines)
        + " ET"
    )
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(ops)} >>\nstream\n{ops}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out


def test_pdf_documents_are_read_from_their_text_layer(tmp_path: Path) -> None:
    from pipeline.taxonomy.documents import read_documents

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.pdf").write_bytes(
        minimal_pdf(["Quillby was founded in 1702.", "It has a bridge."])
    )
    (docs / "blank.pdf").write_bytes(minimal_pdf([]))
    repo = git.Repo.init(docs, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "t")
        cw.set_value("user", "email", "t@example.com")
    repo.index.add(["guide.pdf", "blank.pdf"])
    sha = repo.index.commit("pdf").hexsha
    config = file_config(tmp_path)
    ((name, text),) = read_documents(docs.as_uri(), sha, ["guide.pdf"], config, tmp_path / "cache")
    assert name == "guide.pdf" and "founded in 1702" in text
    with pytest.raises(DocumentError, match="no text layer"):
        read_documents(docs.as_uri(), sha, ["blank.pdf"], config, tmp_path / "cache")


# -- bounded fetching -----------------------------------------------------------------------


def limited_config(tmp_path: Path, **rules: object) -> RepoConfig:
    base = file_config(tmp_path)
    return dataclasses.replace(base, documents=dataclasses.replace(base.documents, **rules))


class FolderWatch:
    """Measures a folder's size every few milliseconds in a thread; ``peak`` is the largest."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for dirpath, _dirs, files in os.walk(self.folder):
                for name in files:
                    try:
                        total += os.lstat(os.path.join(dirpath, name)).st_size
                    except OSError:
                        pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.002)

    def __enter__(self) -> FolderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize(
    "files",
    [
        {"zeros.md": "\0" * (24 << 20)},  # one highly compressible blob
        {f"part{i}.md": "ab" * (3 << 20) for i in range(4)},  # several that add up
        {"deep/a/b/c/same.md": "x\n" * (6 << 20), "other.md": "# small\n"},
    ],
    ids=["one-blob", "many-blobs", "nested-blob"],
)
def test_a_repository_that_would_expand_past_the_cap_is_refused_before_checkout(
    tmp_path: Path, files: dict[str, str]
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    sha = make_repo(docs, files)
    cap = 4 << 20
    config = limited_config(tmp_path, max_repo_bytes=cap)
    cache = tmp_path / "cache"
    cache.mkdir()
    with FolderWatch(cache) as watch, pytest.raises(DocumentError) as refused:
        checkout(docs.as_uri(), sha, config, cache)
    assert "more than the 4,194,304-byte limit" in str(refused.value)
    assert "nothing was checked out" in str(refused.value)
    assert watch.peak < cap, f"the cache grew to {watch.peak:,} bytes"
    assert not [p for p in cache.rglob("*") if p.is_file()], "the refused fetch was left behind"


def test_a_repository_under_the_cap_is_fetched_at_a_commit_that_is_not_a_branch_tip(
    tmp_path: Path,
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    old = make_repo(docs, {"guide.md": "# old\n"})
    make_repo(docs, {"guide.md": "# new\n"})
    config = limited_config(tmp_path, max_repo_bytes=1 << 20)
    co = checkout(docs.as_uri(), old, config, tmp_path / "cache")
    assert (co.path / "guide.md").read_text() == "# old\n"


@pytest.mark.parametrize(
    "pattern", ["**/**/*.md", "docs/**/x/**/*.md", "**/a**.md", "**/**/**/**/*.pdf"]
)
def test_patterns_with_more_than_one_double_star_are_refused(tmp_path: Path, pattern: str) -> None:
    from pipeline.taxonomy.documents import read_documents

    docs = tmp_path / "docs"
    docs.mkdir()
    sha = make_repo(docs, {"a/b/guide.md": "# g\n"})
    config = file_config(tmp_path)
    # The validator reports it at the pattern, with a fix.
    leaf = knowledge_leaf(tmp_path, docs.as_uri(), sha, pattern)
    result = validate_path(leaf, PROFILES["pr"], config)
    found = [f for f in result.findings if "more than one '**'" in f.message]
    assert [f.rule for f in found] == ["document.pattern"]
    line = KNOWLEDGE.split("\n").index('    - "quillby.md"') + 1
    assert (found[0].line, found[0].column) == (line, 7) and "at most one" in found[0].hint
    # Fetching refuses it too, before any git traffic (the cache stays empty).
    cache = tmp_path / "cache"
    with pytest.raises(DocumentError, match=r"more than one '\*\*'"):
        read_documents(docs.as_uri(), sha, [pattern], config, cache)
    assert not cache.exists()
    with pytest.raises(DocumentError, match=r"more than one '\*\*'"):
        match(docs, pattern)
    assert [p.name for p in match(docs, "**/*.md")] == ["guide.md"]  # one is fine


def test_a_file_matched_by_several_patterns_is_read_once(tmp_path: Path) -> None:
    from pipeline.taxonomy.documents import read_documents

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.pdf").write_bytes(minimal_pdf(["Quillby was founded in 1702."]))
    (docs / "sub").mkdir()
    (docs / "sub" / "notes.md").write_text("# Notes\n")
    repo = git.Repo.init(docs, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "t")
        cw.set_value("user", "email", "t@example.com")
    repo.index.add(["guide.pdf", "sub/notes.md"])
    sha = repo.index.commit("docs").hexsha
    patterns = ["guide.pdf", "*.pdf", "./guide.pdf", "**/*.pdf", "sub/*.md", "**/notes.md"]
    read = read_documents(docs.as_uri(), sha, patterns, file_config(tmp_path), tmp_path / "c")
    assert [name for name, _ in read] == ["guide.pdf", "sub/notes.md"]


def slow_pdf(operators: int) -> bytes:
    """A 5 kB PDF whose one page holds ``operators`` text operators behind a Flate filter:
    pypdf needs tens of seconds to extract its text."""
    ops = ("BT /F1 12 Tf 72 720 Td " + "(a) Tj 1 0 Td " * operators + "ET").encode()
    data = zlib.compress(ops, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


def test_one_deadline_stops_a_slow_pdf(tmp_path: Path) -> None:
    from pipeline.taxonomy.documents import read_documents

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "slow.pdf").write_bytes(slow_pdf(300_000))
    (docs / "intro.md").write_text("# Intro\n")
    repo = git.Repo.init(docs, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "t")
        cw.set_value("user", "email", "t@example.com")
    repo.index.add(["slow.pdf", "intro.md"])
    sha = repo.index.commit("docs").hexsha
    config = limited_config(tmp_path, deadline_seconds=1.5)
    started = time.monotonic()
    with pytest.raises(DocumentError, match="took longer"):
        read_documents(docs.as_uri(), sha, ["intro.md", "slow.pdf"], config, tmp_path / "c")
    # Generous slack for a loaded machine; unbounded, the PDF alone takes ~60 s here.
    assert time.monotonic() - started < 10


def test_the_deadline_covers_the_fetch_too(tmp_path: Path) -> None:
    from pipeline.taxonomy.documents import Deadline, read_documents

    docs = tmp_path / "docs"
    docs.mkdir()
    sha = make_repo(docs, {"intro.md": "# Intro\n"})
    spent = Deadline(0.001)
    time.sleep(0.01)
    with pytest.raises(DocumentError, match="took longer than the 0.001-second limit"):
        read_documents(
            docs.as_uri(), sha, ["intro.md"], file_config(tmp_path), tmp_path / "c", spent
        )
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.md"))


def test_a_pdf_over_the_byte_limit_is_not_parsed(tmp_path: Path) -> None:
    from pipeline.taxonomy.pdftext import pdf_text

    big = tmp_path / "big.pdf"
    big.write_bytes(minimal_pdf(["x"]) + b"%" + b"0" * 4096)
    with pytest.raises(DocumentError, match="the limit for a PDF is 1,000"):
        pdf_text(big, "big.pdf", 5.0, max_bytes=1000)
    with pytest.raises(DocumentError, match="not a readable PDF"):
        (tmp_path / "junk.pdf").write_bytes(b"%PDF-1.4\nnot really\n")
        pdf_text(tmp_path / "junk.pdf", "junk.pdf", 5.0)
