"""Knowledge document retrieval against real git repositories made with GitPython."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import git
import pytest

from pipeline.config import RepoConfig, load_config
from pipeline.documents import check_documents, checkout, match, snapshot_folder
from pipeline.errors import DocumentError
from pipeline.validate import PROFILES, validate_path
from tests.samples import KNOWLEDGE

ROOT = Path(__file__).resolve().parent.parent


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
    from pipeline.documents import read_documents

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
