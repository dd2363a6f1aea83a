r"""The one escaping layer for everything labbot writes to GitHub (comments, check runs).

Text a contributor, a teacher model or a build artifact controls is hostile: it must not close a
code span or block, open HTML, make a link or an image, or notify anyone. GitHub renders
Markdown in two steps, and each needs its own defence:

1. CommonMark + GFM parsing. A backslash before an ASCII punctuation character makes it
   literal (CommonMark, "Backslash escapes"): :func:`text` escapes every character that opens
   inline Markdown, HTML, an entity or math, and at the start of a line those that make a
   heading, list, quote or rule. Code spans and fenced blocks get a backtick fence longer than
   any run inside (:func:`code`, :func:`fenced`).
2. GitHub's processing of the resulting text: ``@user`` and ``@org/team`` mentions, ``#123``,
   ``GH-123`` and ``owner/repo#123`` references, and autolinks (``http://``, ``www.``, bare
   domains, e-mail addresses). The escapes are gone by then, so :func:`text` breaks these
   patterns with an invisible WORD JOINER (U+2060): ``@\u2060org`` is no mention.

Bidirectional controls are shown as ``<U+202E>`` (they could reorder what a reviewer reads).
Everything is finally cut to GitHub's limits by :func:`truncate`, which never cuts inside an
escape, an entity, an HTML tag or a code span and closes the fences and ``<details>`` it leaves
open.

Which function for which place:

========================  =================================================================
a word or sentence        ``text(s)``; several lines: ``text(s, multiline=True)``
a table cell              ``cell(s)``; a path or key in a cell: ``cell_code(s)``
a path, key, identifier   ``code(s)`` (outside tables)
multi-line output         ``fenced(s)`` (teacher answers, artifact reports)
a link labbot made        ``inline_link(label, url)`` (https URLs of a safe shape only)
the whole body            ``truncate(body, COMMENT_MAX)`` or ``CHECK_SUMMARY_MAX``
========================  =================================================================

>>> text("ping @org/team about #12, see http://x.test") == (
...     "ping @\u2060org/team about #\u206012, see http\u2060://x.\u2060test")
True
>>> code("a`b")
'``a`b``'
"""

from __future__ import annotations

import re

#: GitHub's limits, in characters (comment bodies, check-run output) or bytes (annotations).
COMMENT_MAX = 65_536
CHECK_SUMMARY_MAX = 65_535
CHECK_TEXT_MAX = 65_535
ANNOTATION_MESSAGE_MAX_BYTES = 64 * 1024
TRUNCATED = "… (truncated)"

JOINER = "\u2060"  # WORD JOINER: invisible, not a word character, matched by no GitHub pattern
NEWLINE_MARK = "\u2424"  # SYMBOL FOR NEWLINE, shown where a one-line place met a line break

_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NEWLINES = re.compile(r"\r\n|\r|\n")
# Characters that open inline Markdown (or GitHub's math) anywhere in a line; the ones that only
# matter at the start of a line (headings, lists, quotes, setext underlines) are escaped there.
_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]<>!&~|$])")
_LINE_START = re.compile(r"^(\s*)([#+=>:-]|[0-9]+[.)])")
# Where GitHub would find a mention, a reference or an autolink in the (already escaped)
# text; a joiner is put at each of these points.
_GITHUB_PATTERNS = re.compile(
    r"(?<=@)(?=[A-Za-z0-9_])"  # @user, @org/team, user@example.com
    r"|(?<=\#)(?=[0-9])"  # #123, owner/repo#123
    r"|(?i:(?<=\bGH))(?=\\?-[0-9])"  # GH-123
    r"|(?=://)"  # scheme://
    r"|(?<=\.)(?=[A-Za-z0-9])"  # www.x, domain.tld, the domain of an e-mail address
)


def _escape_line_start(match: re.Match[str]) -> str:
    marker = "".join(c if c.isdigit() else "\\" + c for c in match.group(2))
    return match.group(1) + marker


def _visible(raw: str) -> str:
    return _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", raw)


def text(raw: str, *, multiline: bool = False) -> str:
    r"""Hostile text as literal inline Markdown: no formatting, HTML, link, mention or reference.

    Line breaks become spaces; with ``multiline`` each line is kept, ending in a hard break
    (a backslash), so that no blank line can end the surrounding list or table.

    >>> text("*bold* <img src=x>")
    '\\*bold\\* \\<img src=x\\>'
    >>> text("@alice") == "@\u2060alice"
    True
    >>> text("a\n\nb", multiline=True)
    'a\\\n\\\nb'
    """
    raw = _visible(raw)
    if multiline:
        return "\\\n".join(text(line) for line in _NEWLINES.split(raw))
    escaped = _INLINE_SPECIAL.sub(r"\\\1", _NEWLINES.sub(" ", raw))
    escaped = _LINE_START.sub(_escape_line_start, escaped)
    return _GITHUB_PATTERNS.sub(JOINER, escaped)


def cell(raw: str) -> str:
    r"""Hostile text for one GFM table cell: :func:`text` on one line (``|`` escaped too).

    >>> cell("a | b\nc")
    'a \\| b c'
    """
    return text(raw)


def _longest_run(raw: str, char: str) -> int:
    return max((len(r) for r in re.findall(re.escape(char) + "+", raw)), default=0)


def code(raw: str) -> str:
    r"""A code span holding ``raw`` literally, whose fence no backtick run inside can close.

    Line breaks are shown as ␤ (a blank line would end the span's paragraph). In a table cell
    use :func:`cell_code`.

    >>> code("x")
    '`x`'
    >>> code("``")
    '``` `` ```'
    >>> code("")
    '` `'
    """
    body = _NEWLINES.sub(NEWLINE_MARK, _visible(raw))
    if not body:
        return "` `"
    fence = "`" * (_longest_run(body, "`") + 1)
    if body[0] == "`" or body[-1] == "`" or (body[0] == body[-1] == " " and body.strip()):
        body = f" {body} "
    return f"{fence}{body}{fence}"


def cell_code(raw: str) -> str:
    r"""A code span in a GFM table cell: :func:`code` with each ``|`` written ``\|`` (GFM
    splits the row before it reads code spans, and drops that backslash again).

    >>> cell_code("a|b")
    '`a\\|b`'
    """
    return code(raw).replace("|", "\\|")


def fenced(raw: str, info: str = "") -> str:
    r"""A fenced code block holding ``raw`` literally (teacher output, an artifact's report).

    The fence is longer than any backtick run inside, so no line of ``raw`` can close it.

    >>> print(fenced("a\n```\nb", "md"))
    ````md
    a
    ```
    b
    ````
    """
    fence = "`" * max(3, _longest_run(raw, "`") + 1)
    info = re.sub(r"[^A-Za-z0-9_+.-]", "", info)[:20]
    return f"{fence}{info}\n{_NEWLINES.sub(chr(10), _visible(raw))}\n{fence}"


def inline_link(label: str, url: str | None) -> str:
    r"""A link to a URL labbot got from GitHub itself (a run's or a job's page), written only
    when the URL has a harmless shape (``https``, no spaces, quotes, brackets or parentheses);
    otherwise the label alone.

    >>> inline_link("log", "https://github.com/o/r/actions/runs/1")
    '[log](https://github.com/o/r/actions/runs/1)'
    >>> inline_link("log", "javascript:alert(1)")
    'log'
    """
    if url is None or not _SAFE_URL.fullmatch(url):
        return text(label)
    return f"[{text(label)}]({url})"


_SAFE_URL = re.compile(r"https://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[^\s()<>\[\]\"'`\\]{0,2000})?")


# -- truncation ------------------------------------------------------------------------------

_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# What a cut must not split: an escape, an entity, an HTML tag, a backtick run (a code span's
# fence: the whole span is kept or dropped), or a run of plain characters (split freely).
_PIECE = re.compile(
    r"\\.\u2060?|&#?[A-Za-z0-9]{1,32};|<[^<>\n]{0,200}>|(`+)|.\u2060"
    r"|(?P<plain>(?:[^\\&<`\u2060](?!\u2060))+)|.",
    re.DOTALL,
)


def _size(value: str, utf8: bool) -> int:
    return len(value.encode("utf-8")) if utf8 else len(value)


def _prefix(value: str, budget: int, utf8: bool) -> str:
    """The longest prefix of ``value`` of at most ``budget`` characters (or bytes)."""
    if budget <= 0:
        return ""
    if not utf8:
        return value[:budget]
    return value.encode("utf-8")[:budget].decode("utf-8", "ignore")


def _cut_line(line: str, budget: int, utf8: bool) -> str:
    """The longest prefix of ``line`` within ``budget`` that ends outside every code span,
    escape, entity and tag."""
    out: list[str] = []
    used = 0
    pos = 0
    while pos < len(line):
        match = _PIECE.match(line, pos)
        assert match is not None  # the last alternative matches any character
        piece, end = match.group(), match.end()
        if match.group(1):  # a backtick run: the span up to the same run, if it closes
            close = re.compile(rf"(?<!`){piece}(?!`)").search(line, end)
            if close is not None:
                piece, end = line[pos : close.end()], close.end()
        size = _size(piece, utf8)
        if used + size > budget:
            if match.group("plain"):
                out.append(_prefix(piece, budget - used, utf8))  # plain text: cut inside
            break
        out.append(piece)
        used += size
        pos = end
    return "".join(out)


def truncate(markdown: str, limit: int, *, utf8: bool = False, marker: str = TRUNCATED) -> str:
    r"""``markdown`` cut to at most ``limit`` characters (UTF-8 bytes with ``utf8``).

    The cut never falls inside an escape, an entity, an HTML tag or a code span; fences and
    ``<details>`` left open are closed, and ``marker`` says that something was cut.

    >>> truncate("short", 100)
    'short'
    >>> print(truncate("<details>\n\n```\n" + "x\n" * 50 + "```\n\n</details>", 50))
    <details>
    <BLANKLINE>
    ```
    x
    x
    ```
    <BLANKLINE>
    </details>
    <BLANKLINE>
    … (truncated)
    >>> truncate("see `a long code span` here", 20)
    'see\n\n… (truncated)'
    """
    if _size(markdown, utf8) <= limit:
        return markdown
    kept: list[str] = []
    fence = ""  # the open fence's marker, if any
    details = 0
    used = 0

    def closing(fence: str, details: int) -> str:
        parts = ([fence] if fence else []) + ["</details>"] * details
        return ("\n" + "\n\n".join(parts) if parts else "") + "\n\n" + marker

    for line in markdown.split("\n"):
        new_fence, new_details = fence, details
        match = _FENCE_LINE.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                if not line.strip().strip(fence[0]):
                    new_fence = ""
        elif match:
            new_fence = match.group(1)
        else:
            low = line.lower()
            new_details = max(0, details + low.count("<details") - low.count("</details>"))
        cost = _size(line, utf8) + 1
        if used + cost + _size(closing(new_fence, new_details), utf8) <= limit:
            kept.append(line)
            used += cost
            fence, details = new_fence, new_details
            continue
        # Part of this line may still fit: inside a fence anywhere, outside at a safe point.
        room = limit - used - _size(closing(fence, details), utf8) - 1
        if room > 0 and not match and new_details == details:
            part = _prefix(line, room, utf8) if fence else _cut_line(line, room, utf8)
            if part.strip():
                kept.append(part.rstrip(" "))
        break
    out = "\n".join(kept) + closing(fence, details)
    return out if _size(out, utf8) <= limit else _prefix(marker, limit, utf8)
