"""The escaping layer (bot/markup.py) and the render functions that use it, checked with a real
CommonMark parser: hostile text never becomes a link, an image, HTML or a mention."""

from __future__ import annotations

import doctest

import pytest

from bot import markup, render
from pipeline.sdg.generate import LeafResult, Sample
from tests.support.markdown_safety import assert_balanced, assert_safe, parser

HOSTILE = [
    "``` `@org/team` ```",
    "x` @org/maintainers `y",
    "knowledge/``` @org/team ```/qna.yaml",
    "@alice please look",
    "fixes #12 and org/repo#3 and GH-45",
    "<img src=x onerror=alert(1)>",
    "<details><summary>open</summary>",
    "</details>",
    "<!-- labbot:section:build -->",
    "[fixed model](javascript:alert(1))",
    "![x](http://evil.test/x.png)",
    "see http://evil.test and https://evil.example/a?b=(c)",
    "www.evil.test",
    "download from evil.com today",
    "mail admin@evil.com",
    "<https://evil.test>",
    "[ref]: http://evil.test",
    "&lt;script&gt; &#64;org &amp; &copy;",
    "| cell | break |\n|---|---|\n| x | y |",
    "line\n\n# heading\n- item\n> quote",
    "\u202eevil\u202c and zero\u200bwidth@\u200dorg",
    "*bold* _it_ ~~s~~ **x**",
    "\\`escaped\\` \\@org/team",
    "trailing backslash \\",
    "``",
    " `` ",
    "~~~\n```\n",
]


def _plain(markdown: str) -> str:
    tokens = parser().parse(markdown)
    out = []
    for block in tokens:
        for child in block.children or []:
            if child.type in ("text", "code_inline"):
                out.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                out.append("\n")
    return "".join(out).replace(markup.JOINER, "")


def test_doctests() -> None:
    failures, tried = doctest.testmod(markup)
    assert tried > 10 and failures == 0


@pytest.mark.parametrize("hostile", HOSTILE)
def test_text_is_literal_everywhere(hostile: str) -> None:
    rendered = markup.text(hostile)
    for context in (
        f"Before {rendered} after.",
        f"- item {rendered}",
        f"> {rendered}",
        f"### {rendered}",
        f"| a | b |\n|---|---|\n| {markup.cell(hostile)} | {markup.cell_code(hostile)} |",
        f"**{rendered}**",
        f"[{rendered}](https://github.com/o/r)",
    ):
        assert_safe(context, [hostile], allowed_links=["https://github.com/o/r"])
        assert_balanced(context)
    assert "\n" not in rendered
    if "\n" not in hostile and "\u202e" not in hostile and "\r" not in hostile:
        assert _plain(rendered) == hostile.strip()  # literal: every character as written


@pytest.mark.parametrize("hostile", HOSTILE)
def test_code_spans_cannot_be_closed(hostile: str) -> None:
    span = markup.code(hostile)
    doc = f"Path {span} here @\u2060x."
    assert_safe(doc, [hostile])
    codes = [c for t in parser().parse(doc) for c in t.children or [] if c.type == "code_inline"]
    assert len(codes) == 1
    expected = hostile.replace("\n", markup.NEWLINE_MARK)
    expected = expected.replace("\u202e", "<U+202E>").replace("\u202c", "<U+202C>")
    assert codes[0].content == expected or (not hostile and codes[0].content == " ")
    # the same inside a table cell
    table = f"| a | b |\n|---|---|\n| {markup.cell_code(hostile)} | end |"
    assert_safe(table, [hostile])
    cells = [c for t in parser().parse(table) for c in t.children or [] if c.type == "code_inline"]
    assert len(cells) == 1 and cells[0].content == codes[0].content
    assert "end" in _plain(table)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_fenced_blocks_cannot_be_closed(hostile: str) -> None:
    doc = f"Teacher said:\n\n{markup.fenced(hostile + chr(10) + '`' * 9, 'md')}\n\nafter @\u2060x"
    assert_safe(doc, [hostile])
    assert_balanced(doc)
    fences = [t for t in parser().parse(doc) if t.type == "fence"]
    assert len(fences) == 1 and fences[0].content.startswith(hostile.split("\u202e")[0])


def test_entities_and_escapes_stay_literal() -> None:
    assert _plain(markup.text("&#64;org &lt;b&gt;")) == "&#64;org &lt;b&gt;"
    assert _plain(markup.text("a\\*b\\")) == "a\\*b\\"


def test_multiline_text_keeps_lines_without_ending_the_block() -> None:
    hostile = "first @org/team\n\n| x |\n- item\n\n```"
    doc = "- " + markup.text(hostile, multiline=True) + "\n- next item"
    assert_safe(doc, [hostile])
    tokens = parser().parse(doc)
    assert [t.type for t in tokens].count("list_item_open") == 2


def test_links_only_to_safe_urls() -> None:
    assert markup.inline_link("run", "https://github.com/o/r/actions/runs/1") == (
        "[run](https://github.com/o/r/actions/runs/1)"
    )
    for url in (
        "javascript:alert(1)",
        "http://github.com/x",
        "https://x.test/a) [y](https://evil.test",
        "https://x.test/<img>",
        None,
    ):
        assert "](" not in markup.inline_link("run", url)


@pytest.mark.parametrize("limit", [40, 64, 100, 257, 1000, 4096])
def test_truncation_keeps_markdown_balanced(limit: int) -> None:
    hostile = "x` @org/team `y \\ &amp; " * 200
    body = "\n".join(
        [
            "### heading",
            "",
            "<details><summary>Kept samples</summary>",
            "",
            f"- {markup.text(hostile)}",
            "",
            markup.fenced(hostile * 3),
            "",
            f"| a | b |\n|---|---|\n| {markup.cell_code(hostile)} | {markup.cell(hostile)} |",
            "",
            "</details>",
            "",
            f"Code {markup.code(hostile)} and more.",
        ]
    )
    for cut in (limit, limit + 1, limit + 7):
        out = markup.truncate(body, cut)
        assert len(out) <= cut and out.endswith(markup.TRUNCATED)
        assert_balanced(out)
        assert_safe(out, [hostile])
        out_bytes = markup.truncate("é" * 100 + "\n" + body, cut, utf8=True)
        assert len(out_bytes.encode()) <= cut


def test_truncation_never_splits_an_escape_or_a_code_span() -> None:
    line = markup.text("@org/team *x* " * 50) + " " + markup.code("a`b @org/team")
    for cut in range(20, len(line), 37):
        out = markup.truncate(line, cut)
        head = out.removesuffix(markup.TRUNCATED).rstrip("\n")
        assert not head.endswith("\\") or head.endswith("\\\\")
        assert head.count(markup.JOINER) == head.count("@") + head.count("#")
        assert_safe(out, ["@org/team"])
        spans = [c for t in parser().parse(out) for c in t.children or []]
        assert all(c.content == "a`b @org/team" for c in spans if c.type == "code_inline")


def test_github_limits() -> None:
    assert markup.COMMENT_MAX == 65_536 and markup.CHECK_SUMMARY_MAX == 65_535
    huge = markup.text("@org/team " * 20_000)
    assert len(markup.truncate(huge, markup.COMMENT_MAX)) <= markup.COMMENT_MAX


# -- the render functions that write hostile text --------------------------------------------


def _sample(text: str, kept: bool) -> Sample:
    return Sample(
        id="s",
        leaf=text,
        kind="knowledge",
        question=f"Q {text}",
        answer=f"A {text}\n\n{text}",
        kept=kept,
        rejected_by=None if kept else f"critic {text}",
        filters=[{"name": "critic", "passed": False, "reason": f"why {text}"}],
    )


@pytest.mark.parametrize("hostile", HOSTILE)
def test_preview_section_escapes_teacher_and_contributor_text(hostile: str) -> None:
    result = LeafResult(
        leaf=f"knowledge/{hostile}/qna.yaml",
        slug="s",
        kind="knowledge",
        samples=[_sample(hostile, True), _sample(hostile, False)],
        errors=[f"teacher said {hostile}"],
    )
    body = render.preview_section([result], "a" * 40, f"model {hostile}")
    assert_safe(body, [hostile])
    assert_balanced(body)
    assert "Kept samples" in body and "Rejected samples" in body


@pytest.mark.parametrize("hostile", HOSTILE)
def test_build_sections_escape_artifact_text(hostile: str) -> None:
    url = "https://github.com/org/taxonomy/actions/runs/7"
    odd_url = f"https://github.com/org/taxonomy/actions/runs/7/{hostile}"
    leaf = f"compositional_skills/{hostile}/qna.yaml"
    table = [{"leaf": leaf, "base_rouge_l": 0.1, "phase2_rouge_l": 0.2, "improved": True}]
    answers = {
        "base": [{"leaf": leaf, "question": hostile, "answer": f"old {hostile}"}],
        "phase2": [
            {"leaf": leaf, "question": hostile, "reference": hostile, "answer": f"new {hostile}"}
        ],
    }
    for body in (
        render.build_result(3, "b" * 40, url, [leaf], table, answers),
        render.build_failed(3, "b" * 40, f"the run said {hostile}", url),
        render.build_failed(3, "b" * 40, "x", odd_url),
        render.build_running(3, "b" * 40, url),
        render.build_queued(3, "b" * 40, url),
        render.preview_unavailable(f"teacher error: {hostile}"),
    ):
        # a URL from GitHub is linked only as a whole, and only when its shape is harmless
        assert_safe(body, [hostile], allowed_links=[url, odd_url])
        assert_balanced(body)
    assert "new " in render.build_result(3, "b" * 40, url, [leaf], table, answers)


def test_help_is_safe() -> None:
    assert_safe(render.HELP, [])
    assert_balanced(render.HELP)
