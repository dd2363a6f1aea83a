"""Checks that Markdown labbot wrote gives hostile text no way to act on GitHub.

Markdown is parsed with markdown-it-py (CommonMark, GFM tables and strikethrough, linkify for
GitHub's autolinks). What GitHub does after parsing (mentions, ``#123`` references, autolinks
of the plain text) is checked on the text the parser leaves outside code: no dangerous piece
of a hostile string may survive there.

    from tests.support.markdown_safety import assert_safe, assert_balanced
    assert_safe(comment_body, ["@org/team", "`x` <img src=x>"], allowed_links=[run_url])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from markdown_it import MarkdownIt
from markdown_it.token import Token

#: The HTML labbot writes itself; any other HTML node is a failure.
OWN_HTML = re.compile(
    r"\s*(?:(?:<details>|</details>|<summary>[^<>]*</summary>|<sub>|</sub>|<br>"
    r"|<!-- /?labbot:[a-z:]+ -->)\s*)+"
)
#: What GitHub turns into a notification or a link in plain text.
DANGEROUS = re.compile(
    r"@[A-Za-z0-9][A-Za-z0-9-]*(?:/[A-Za-z0-9_.-]+)?"  # @user, @org/team
    r"|(?:[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)?#[0-9]+"  # #12, owner/repo#12
    r"|\bGH-[0-9]+"
    r"|[A-Za-z][A-Za-z0-9+.-]*://\S+"  # scheme://...
    r"|\bwww\.[A-Za-z0-9-]+"
    r"|\b[A-Za-z0-9-]+\.[A-Za-z]{2,}\b",  # domain.tld (GitHub links fewer; linkify-it more)
    re.IGNORECASE,
)
CODE = {"code_inline", "code_block", "fence"}


def parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"linkify": True}).enable(["table", "strikethrough", "linkify"])


def _walk(tokens: Iterable[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        if token.children:
            yield from _walk(token.children)


def dangerous_pieces(hostile: str) -> list[str]:
    """The pieces of ``hostile`` GitHub would act on if they reached plain text."""
    return [m.group() for m in DANGEROUS.finditer(hostile)]


def assert_safe(
    markdown: str,
    hostile: Iterable[str],
    *,
    allowed_links: Iterable[str] = (),
    allowed_mentions: Iterable[str] = (),
) -> None:
    """Fail when ``markdown`` holds a link, image or HTML labbot did not write itself, or when a
    mention, reference or autolink from one of the ``hostile`` strings is in its plain text."""
    links = set(allowed_links)
    mentions = {m.lower() for m in allowed_mentions}
    tokens = list(_walk(parser().parse(markdown)))
    plain = "\n".join(t.content for t in tokens if t.type == "text")
    for token in tokens:
        if token.type == "link_open":
            href = str(token.attrs.get("href", ""))
            assert href in links, f"link to {href!r} in:\n{markdown}"
        assert token.type != "image", f"image {token.attrs} in:\n{markdown}"
        if token.type in ("html_inline", "html_block"):
            assert OWN_HTML.fullmatch(token.content), (
                f"HTML not written by labbot: {token.content!r}"
            )
    for raw in hostile:
        for piece in dangerous_pieces(raw):
            if piece.lower() in mentions:
                continue
            assert piece not in plain, f"{piece!r} from {raw[:80]!r} is live in:\n{markdown}"


def assert_balanced(markdown: str) -> None:
    """Fail when a fence or a ``<details>`` is left open (so text after it would be swallowed)."""
    tokens = parser().parse(markdown + "\n\nlabbot-sentinel\n")
    assert any(
        t.type == "inline" and t.content == "labbot-sentinel" and t.level == 1 for t in tokens
    ), f"an open block swallows what follows:\n{markdown[-500:]}"
    html = "".join(t.content for t in _walk(tokens) if t.type in ("html_inline", "html_block"))
    assert html.count("<details>") == html.count("</details>"), "unbalanced <details>"
