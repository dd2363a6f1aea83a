"""The text layer of a PDF, read in a child process that can be stopped.

A PDF in a document repository is contributor input: a hostile one can make a parser spin or
inflate a small stream into gigabytes. :func:`pdf_text` therefore runs pypdf in a separate Python
process with a wall-clock limit and an address-space limit, refuses files over a byte limit
before parsing, stops after a page limit, and caps the text it returns. No OCR, no downloads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.errors import DocumentError

MAX_PDF_BYTES = 64 * 1024 * 1024
MAX_PAGES = 500
MAX_TEXT_CHARS = 8 * 1024 * 1024
CHILD_MEMORY_BYTES = 2 * 1024 * 1024 * 1024

# Exit statuses of the child, each with its own message.
_TOO_MANY_PAGES = 3
_UNREADABLE = 4
_NO_PYPDF = 5


def pdf_text(
    path: Path,
    name: str,
    seconds: float,
    *,
    max_pages: int = MAX_PAGES,
    max_bytes: int = MAX_PDF_BYTES,
    max_chars: int = MAX_TEXT_CHARS,
) -> str:
    """The text layer of the PDF at ``path`` (``name`` is how errors call it), one paragraph
    per page break, read in at most ``seconds``.

    Raises:
        DocumentError: the PDF is too large, has too many pages, cannot be read, takes too
            long, or has no text layer (a scan).
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise DocumentError(f"{name}: {size:,} bytes; the limit for a PDF is {max_bytes:,}")
    if seconds <= 0:
        raise DocumentError(f"{name}: no time was left to read it")
    command = [
        sys.executable,
        "-I",
        "-c",
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from pipeline.taxonomy.pdftext import _child; sys.exit(_child(sys.argv[2:]))",
        _package_root(),
        str(path),
        str(max_pages),
        str(max_chars),
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            timeout=seconds,
            preexec_fn=_limit_memory if sys.platform.startswith("linux") else None,
            env=_child_env(),
        )
    except subprocess.TimeoutExpired:
        raise DocumentError(
            f"{name}: reading the PDF took longer than the {seconds:.0f} s left for documents"
        ) from None
    if done.returncode == _TOO_MANY_PAGES:
        raise DocumentError(f"{name}: {done.stderr.decode(errors='replace').strip()}")
    if done.returncode == _NO_PYPDF:
        raise DocumentError(f"{name}: reading PDF documents needs pypdf (pip install pypdf)")
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        reason = detail[-1][:200] if detail else f"the reader stopped (status {done.returncode})"
        raise DocumentError(f"{name}: not a readable PDF: {reason}")
    text = done.stdout.decode("utf-8", errors="replace")
    if not text.strip():
        raise DocumentError(
            f"{name}: the PDF has no text layer (a scan?); provide a Markdown version"
        )
    return text


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _child_env() -> dict[str, str]:
    import os

    return {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"}


def _limit_memory() -> None:  # pragma: no cover - runs in the child before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))


def _child(argv: list[str]) -> int:  # pragma: no cover - runs in the child process
    path, max_pages, max_chars = argv[0], int(argv[1]), int(argv[2])
    try:
        from pypdf import PdfReader
    except ImportError:
        return _NO_PYPDF
    try:
        reader = PdfReader(path)
        pages = len(reader.pages)
        if pages > max_pages:
            sys.stderr.write(f"{pages} pages; the limit is {max_pages}\n")
            return _TOO_MANY_PAGES
        out: list[str] = []
        total = 0
        for page in reader.pages:
            text = (page.extract_text() or "").strip()
            if text:
                out.append(text[: max_chars - total])
                total += len(out[-1]) + 2
            if total >= max_chars:
                break
    except Exception as exc:  # noqa: BLE001 -- any parser failure means "unreadable"
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return _UNREADABLE
    sys.stdout.buffer.write("\n\n".join(out).encode("utf-8", errors="replace"))
    return 0
