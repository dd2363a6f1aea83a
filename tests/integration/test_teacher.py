"""The teacher seam: context guard, concurrency, retries, errors, stats, and two real teachers.

Most tests run ``OpenAITeacher`` against
:class:`tests.support.teacher_server.ScriptedTeacherServer`, a real HTTP server on 127.0.0.1.
The last ones use the embedded SmolLM2 in-process and behind the real llama.cpp server (skipped
only when llama-cpp-python is not installed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import UsageError
from pipeline.sdg.teacher import (
    DEFAULT_CONTEXT_WINDOW,
    MIN_COMPLETION_TOKENS,
    Completion,
    EmbeddedTeacher,
    Failure,
    GenParams,
    OpenAITeacher,
    Teacher,
    TeacherError,
    TeacherStats,
    estimate_tokens,
    fit_max_tokens,
    make_teacher,
)
from tests.support.llama_server import LlamaServer, free_port, require_llama_cpp
from tests.support.models import EMBEDDED_CACHE
from tests.support.teacher_server import ScriptedTeacherServer

FAST = {"backoff": 0.01}


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def echo(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    """Answer with the last message's first word and a fixed tail."""
    return f"echo {messages[-1]['content'].split()[0]} done"


def sent_within_context(server: ScriptedTeacherServer) -> None:
    assert server.overflows == 0
    for entry in server.chat_requests():
        if "prompt_tokens" in entry:
            assert entry["prompt_tokens"] + entry["max_tokens"] <= server.n_ctx, entry


@pytest.fixture
def server() -> Iterator[ScriptedTeacherServer]:
    with ScriptedTeacherServer(echo, n_ctx=256) as running:
        yield running


# -- the context guard ---------------------------------------------------------------------------


def test_fit_max_tokens_keeps_shrinks_or_fails() -> None:
    assert fit_max_tokens(100, GenParams(max_tokens=50), 200) == 50
    assert fit_max_tokens(150, GenParams(max_tokens=50), 200) == 50
    assert fit_max_tokens(160, GenParams(max_tokens=50), 200) == 40
    assert fit_max_tokens(190, GenParams(max_tokens=8), 200) == 8
    assert isinstance(fit_max_tokens(195, GenParams(max_tokens=8), 200), Failure)
    assert fit_max_tokens(150, GenParams(max_tokens=80), 200) == 50
    assert fit_max_tokens(200 - MIN_COMPLETION_TOKENS, GenParams(max_tokens=80), 200) == 32
    failure = fit_max_tokens(200 - MIN_COMPLETION_TOKENS + 1, GenParams(max_tokens=50), 200)
    assert isinstance(failure, Failure)
    assert "prompt of 169 tokens does not fit the teacher's 200-token context" in failure.reason


@pytest.mark.parametrize(
    "bad", [{"max_tokens": 0}, {"temperature": -0.1}, {"top_p": 0.0}, {"top_p": 1.5}]
)
def test_gen_params_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        GenParams(**bad)


def test_context_guard_with_exact_counting(server: ScriptedTeacherServer) -> None:
    """Prompts that fit keep max_tokens, tight ones shrink, long ones fail without being sent."""
    with OpenAITeacher(server.url, tokenizer=server.prompt_tokens, **FAST) as teacher:
        assert teacher.context_window == 256  # from /v1/models' max_model_len
        short = ask("one two three")  # 9 tokens
        tight = ask("w " * 190)  # 196 tokens: 60 left
        long = ask("w " * 240)  # 246 tokens: 10 left
        assert teacher.count_tokens(tight) == server.prompt_tokens(tight) == 196
        results = teacher.chat([short, tight, long], GenParams(max_tokens=100))
    assert isinstance(results[0], Completion) and results[0].text == "echo one done"
    assert isinstance(results[1], Completion) and results[1].prompt_tokens == 196
    assert isinstance(results[2], Failure)
    assert "prompt of 246 tokens does not fit the teacher's 256-token context" in results[2].reason
    sent = server.chat_requests()
    assert [e["max_tokens"] for e in sent] == [100, 60]  # the long one never left the client
    assert sent[1]["prompt_tokens"] + sent[1]["max_tokens"] == 256
    sent_within_context(server)
    assert teacher.stats.calls == 3 and teacher.stats.failures == 1


def test_estimated_counting_never_overflows(server: ScriptedTeacherServer) -> None:
    """Without a tokenizer the estimate is conservative: nothing sent overflows the context."""
    texts = [" ".join(["word"] * n) for n in range(0, 240, 12)]
    texts += ["1234567890 " * n for n in (5, 12, 20)] + ["Größe über € " * 15, "語" * 60]
    prompts = [ask(t or "empty") for t in texts]
    with OpenAITeacher(server.url, concurrency=4, **FAST) as teacher:
        for prompt in prompts:
            assert teacher.count_tokens(prompt) >= server.prompt_tokens(prompt)
        results = teacher.chat(prompts, GenParams(max_tokens=64))
    sent_within_context(server)
    assert any(isinstance(r, Failure) for r in results)  # the longest prompts
    assert sum(isinstance(r, Completion) for r in results) == len(server.chat_requests())
    assert isinstance(results[0], Completion)


def test_estimate_is_conservative_for_real_tokenizer(smol_tokenizer: Any) -> None:
    from pipeline.sdg.teacher import chat_template_counter

    exact = chat_template_counter(smol_tokenizer)
    samples = [
        "What is the capital of France? Answer in one word.",
        "| year | revenue |\n|---|---|\n"
        + "".join(f"| {y} | {y * 3.75:.2f} |\n" for y in range(50)),
        '{"id": 1234, "tags": ["alpha", "beta"], "score": 0.875}' * 10,
        "def add(x: int, y: int) -> int:\n    return x + y\n" * 10,
        "Die Straßenbahn fährt über die Brücke. " * 10 + "机器学习是人工智能的一个分支。" * 5,
    ]
    for text in samples:
        messages = [{"role": "system", "content": "You are terse."}, *ask(text)]
        assert estimate_tokens(messages) >= exact(messages), text[:40]


def test_learns_the_context_from_overflow_and_usage() -> None:
    """A server that hides its context and counts more tokens than the estimate (1 per byte).

    The first over-long request gets the server's 400; the client reads the real context from
    the message, fails that request, and sends nothing too long afterwards.
    """
    with (
        ScriptedTeacherServer(echo, n_ctx=512, count=len, advertise_context=False) as server,
        OpenAITeacher(server.url, concurrency=1, **FAST) as teacher,
    ):
        assert teacher.context_window == DEFAULT_CONTEXT_WINDOW
        prompts = [ask("a" * 400), ask("b" * 600), ask("c" * 400), ask("d" * 440)]
        results = teacher.chat(prompts, GenParams(max_tokens=64))
        assert teacher.context_window == 512
        assert server.overflows == 1
        assert [type(r).__name__ for r in results] == [
            "Completion",
            "Failure",
            "Completion",
            "Completion",
        ]
        last = server.chat_requests()[-1]
        assert last["prompt_tokens"] + last["max_tokens"] <= 512
        assert teacher.stats.retries == 1


def test_learns_the_context_from_a_cut_answer() -> None:
    """Like llama-cpp-python: a server that hides its context and cuts answers short at its end."""
    with (
        ScriptedTeacherServer(
            echo, n_ctx=300, advertise_context=False, on_overflow="truncate"
        ) as server,
        OpenAITeacher(server.url, tokenizer=server.prompt_tokens, **FAST) as teacher,
    ):
        server.responder = lambda messages, body: "many words " * 100
        assert teacher.context_window == DEFAULT_CONTEXT_WINDOW
        [cut] = teacher.chat([ask("w " * 200)], GenParams(max_tokens=150))  # 206 + 150 > 300
        assert isinstance(cut, Completion) and cut.finish_reason == "length"
        assert cut.completion_tokens == 94
        assert teacher.context_window == 300
        teacher.chat([ask("w " * 200)], GenParams(max_tokens=150))
        assert server.chat_requests()[-1]["body"]["max_tokens"] == 94


# -- concurrency ---------------------------------------------------------------------------------


def numbered(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    return f"answer {messages[-1]['content']}"


def test_concurrency_bound_is_respected_and_used() -> None:
    with ScriptedTeacherServer(numbered, latency=0.1) as server:
        with OpenAITeacher(server.url, concurrency=4, **FAST) as teacher:
            started = time.monotonic()
            results = teacher.chat([ask(str(i)) for i in range(16)], GenParams(max_tokens=8))
            elapsed = time.monotonic() - started
    assert server.max_in_flight == 4
    assert [r.text for r in results if isinstance(r, Completion)] == [
        f"answer {i}" for i in range(16)
    ]
    assert 0.38 < elapsed < 1.2  # 4 waves of 0.1 s; one at a time would take 1.6 s
    assert teacher.stats.busy_seconds >= 16 * 0.1


def test_concurrency_bound_holds_across_threads() -> None:
    """Several SDG workers sharing one teacher still keep at most ``concurrency`` in flight."""
    with ScriptedTeacherServer(numbered, latency=0.05) as server:
        with OpenAITeacher(server.url, concurrency=3, **FAST) as teacher:
            out: list[list[Completion | Failure]] = []

            def work(k: int) -> None:
                out.append(teacher.chat([ask(f"{k}-{i}") for i in range(6)], GenParams()))

            threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    assert server.max_in_flight == 3
    assert sum(len(o) for o in out) == 18
    assert all(isinstance(r, Completion) for o in out for r in o)


def test_slower_server_queue_is_not_an_error() -> None:
    with ScriptedTeacherServer(numbered, latency=0.05, concurrency=2) as server:
        with OpenAITeacher(server.url, concurrency=6, **FAST) as teacher:
            results = teacher.chat([ask(str(i)) for i in range(12)], GenParams())
    assert server.max_in_flight == 2
    assert all(isinstance(r, Completion) for r in results)


# -- retries and errors --------------------------------------------------------------------------


def test_retries_503_and_429_then_succeeds(server: ScriptedTeacherServer) -> None:
    with OpenAITeacher(server.url, retries=3, **FAST) as teacher:
        server.fail_next(503, 429, 502)
        [result] = teacher.chat([ask("hello there")], GenParams(max_tokens=16))
    assert isinstance(result, Completion) and result.text == "echo hello done"
    assert [e["status"] for e in server.chat_requests()] == [503, 429, 502, 200]
    assert teacher.stats.retries == 3


def test_gives_up_after_retries(server: ScriptedTeacherServer) -> None:
    with OpenAITeacher(server.url, retries=2, **FAST) as teacher:
        server.fail_next(503, 503, 503, 503)
        with pytest.raises(TeacherError, match=r"keeps failing: HTTP 503.*3 tries") as info:
            teacher.chat([ask("hello")], GenParams())
    assert server.url in str(info.value)
    assert len(server.chat_requests()) == 3


def test_no_retry_on_plain_400(server: ScriptedTeacherServer) -> None:
    with OpenAITeacher(server.url, **FAST) as teacher:
        server.fail_next(400)
        with pytest.raises(TeacherError, match="refused a chat request with HTTP 400"):
            teacher.chat([ask("hello")], GenParams())
    assert len(server.chat_requests()) == 1


def test_error_aborts_the_batch(server: ScriptedTeacherServer) -> None:
    server.latency = 0.02
    with OpenAITeacher(server.url, concurrency=2, **FAST) as teacher:
        server.fail_next(401)
        with pytest.raises(TeacherError, match="rejected the credentials"):
            teacher.chat([ask(f"q{i}") for i in range(40)], GenParams())
    assert len(server.chat_requests()) < 10  # the rest were cancelled


def test_unreachable_teacher() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(TeacherError) as info:
        OpenAITeacher(url, retries=1, **FAST)
    message = str(info.value)
    assert f"cannot reach the teacher at {url}: connection refused" in message
    # The library says what to do without naming a flag; the CLI adds the flag (test_exit_codes).
    assert "use the embedded teacher" in message and "--" not in message
    assert info.value.problem == "unreachable" and info.value.base_url == url
    # Nothing to discover: the first chat finds out instead.
    with OpenAITeacher(url, model="m", context_window=512, retries=0) as teacher:
        with pytest.raises(TeacherError, match="cannot reach the teacher"):
            teacher.chat([ask("hello"), ask("again")], GenParams())


def test_nonsense_answers(server: ScriptedTeacherServer) -> None:
    server.nonsense = True
    with pytest.raises(TeacherError, match="answered nonsense to GET /models"):
        OpenAITeacher(server.url, **FAST)
    server.nonsense = False
    with OpenAITeacher(server.url, **FAST) as teacher:
        server.fail_next("nonsense")
        with pytest.raises(TeacherError, match=r"answered nonsense.*It works!.*is not JSON"):
            teacher.chat([ask("hello")], GenParams())
        server.fail_next("wrong-shape")
        with pytest.raises(TeacherError, match=r"answered nonsense: no choices\[0\]"):
            teacher.chat([ask("hello")], GenParams())


def test_wrong_path_says_what_to_do(server: ScriptedTeacherServer) -> None:
    with pytest.raises(TeacherError, match="usually ending in /v1"):
        OpenAITeacher(server.root_url + "/api", **FAST)


def test_empty_completion_is_valid(server: ScriptedTeacherServer) -> None:
    server.responder = lambda messages, body: ""
    with OpenAITeacher(server.url, **FAST) as teacher:
        [result] = teacher.chat([ask("say nothing")], GenParams())
    assert result == Completion("", server.prompt_tokens(ask("say nothing")), 0, "stop")


def test_request_body_and_stop(server: ScriptedTeacherServer) -> None:
    server.responder = lambda messages, body: "first part END second part"
    params = GenParams(max_tokens=20, temperature=0.7, top_p=0.9, seed=7, stop=("END",))
    with OpenAITeacher(server.root_url, **FAST) as teacher:  # /v1 is added
        assert teacher.base_url == server.url
        [result] = teacher.chat([ask("go")], params)
    assert isinstance(result, Completion) and result.text == "first part "
    body = server.chat_requests()[0]["body"]
    assert body == {
        "model": "scripted",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": 20,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["END"],
    }


def test_stats(server: ScriptedTeacherServer) -> None:
    server.latency = 0.02
    with OpenAITeacher(server.url, concurrency=2, tokenizer=server.prompt_tokens, **FAST) as t:
        server.fail_next(503)
        results = t.chat([ask("a b c"), ask("d e"), ask("w " * 300)], GenParams(max_tokens=30))
    served = [e for e in server.chat_requests() if e.get("served")]
    stats = t.stats.as_dict()
    assert stats["calls"] == 3 and stats["failures"] == 1 and stats["retries"] == 1
    assert stats["prompt_tokens"] == sum(e["prompt_tokens"] for e in served) == 9 + 8
    assert stats["completion_tokens"] == 6
    assert sum(r.completion_tokens for r in results if isinstance(r, Completion)) == 6
    assert 2 * 0.02 <= float(stats["busy_seconds"]) and float(stats["wall_seconds"]) > 0
    merged = TeacherStats()
    merged.add(calls=2, busy_seconds=0.5)
    assert merged.as_dict() == {
        "calls": 2,
        "failures": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "busy_seconds": 0.5,
        "wall_seconds": 0.0,
        "retries": 0,
    }


def test_scripted_server_speaks_completions_too(server: ScriptedTeacherServer) -> None:
    import httpx

    body = {"model": "scripted", "prompt": "alpha beta", "max_tokens": 2}
    answer = httpx.post(f"{server.url}/completions", json=body, timeout=10).json()
    assert answer["choices"][0] == {
        "index": 0,
        "text": "echo alpha",
        "finish_reason": "length",
        "logprobs": None,
    }
    assert answer["usage"]["prompt_tokens"] == server.prompt_tokens(ask("alpha beta")) == 8


# -- make_teacher --------------------------------------------------------------------------------


def test_make_teacher_url(server: ScriptedTeacherServer, tmp_path: Path) -> None:
    teacher = make_teacher(server.url, cache_dir=tmp_path, concurrency=3, context_window=128)
    try:
        assert isinstance(teacher, OpenAITeacher) and isinstance(teacher, Teacher)
        assert teacher.identity == f"openai:{server.url}:scripted"
        assert teacher.context_window == 128 and teacher.concurrency == 3
    finally:
        teacher.close()


@pytest.mark.parametrize("spec", ["", "gpt-4", "ftp://127.0.0.1/v1", "http://", "embeded"])
def test_make_teacher_rejects_unknown_specs(spec: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="teacher"):
        make_teacher(spec, cache_dir=tmp_path)
    with pytest.raises(UsageError, match="at least 1"):
        make_teacher("embedded", cache_dir=tmp_path, concurrency=0)


# -- the real model: embedded SmolLM2 and the llama.cpp server -------------------------------------


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    from pipeline import embedded

    return embedded.model_dir(EMBEDDED_CACHE)


@pytest.fixture(scope="session")
def smol_tokenizer(smol_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smol_dir))


@pytest.fixture(scope="session")
def embedded_teacher(smol_dir: Path) -> Iterator[EmbeddedTeacher]:
    teacher = EmbeddedTeacher(smol_dir)
    yield teacher
    teacher.close()


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    require_llama_cpp()
    from pipeline import embedded

    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    # A small context keeps the prompts that probe its end cheap to evaluate on a CPU.
    with LlamaServer(embedded.gguf_path(), n_ctx=512, log_path=log_path) as running:
        yield running


CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


def test_make_teacher_embedded(smol_dir: Path) -> None:
    teacher = make_teacher("embedded", cache_dir=smol_dir.parent.parent, context_window=1024)
    assert isinstance(teacher, EmbeddedTeacher) and isinstance(teacher, Teacher)
    assert teacher.identity == "embedded:SmolLM2-135M-Instruct"
    assert teacher.context_window == 1024
    assert make_teacher("embedded", cache_dir=smol_dir.parent.parent).context_window == 2048


def test_embedded_teacher_greedy_is_deterministic(embedded_teacher: EmbeddedTeacher) -> None:
    params = GenParams(max_tokens=12)
    first = embedded_teacher.chat([CAPITAL], params)
    again = embedded_teacher.chat([CAPITAL], params)
    assert first == again
    [answer] = first
    assert isinstance(answer, Completion)
    assert answer.text.strip()
    assert answer.prompt_tokens == embedded_teacher.count_tokens(CAPITAL) > 0
    assert 0 < answer.completion_tokens <= 12
    assert answer.finish_reason in ("stop", "length")


def test_embedded_teacher_batches_and_guards(embedded_teacher: EmbeddedTeacher) -> None:
    """Left-padded batching gives the same greedy answer as a lone request, in request order."""
    params = GenParams(max_tokens=12)
    [alone] = embedded_teacher.chat([CAPITAL], params)
    longer = ask("Name three colours of the rainbow, separated by commas, and nothing else.")
    too_long = ask("word " * 2100)
    results = embedded_teacher.chat([longer, CAPITAL, too_long], params)
    assert results[1] == alone
    assert isinstance(results[0], Completion) and results[0].text != alone.text
    assert isinstance(results[2], Failure) and "2048-token context" in results[2].reason
    stats = embedded_teacher.stats.as_dict()
    assert stats["failures"] >= 1 and float(stats["busy_seconds"]) > 0


def test_embedded_teacher_counts_tokens_from_many_threads(
    embedded_teacher: EmbeddedTeacher, smol_tokenizer: Any
) -> None:
    from pipeline.sdg.teacher import chat_template_counter

    prompts = [ask(f"Question number {i}: " + "why? " * i) for i in range(40)]
    expected = [chat_template_counter(smol_tokenizer)(p) for p in prompts]
    counts: dict[int, list[int]] = {}

    def work(k: int) -> None:
        counts[k] = [embedded_teacher.count_tokens(p) for p in prompts]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(counts[k] == expected for k in range(4))


def test_embedded_teacher_seeded_sampling(embedded_teacher: EmbeddedTeacher) -> None:
    params = GenParams(max_tokens=10, temperature=1.0, top_p=0.95, seed=3)
    assert embedded_teacher.chat([CAPITAL], params) == embedded_teacher.chat([CAPITAL], params)


def test_llama_server_chat_and_exact_tokens(llama: LlamaServer, smol_tokenizer: Any) -> None:
    with OpenAITeacher(
        llama.url, context_window=llama.n_ctx, tokenizer=smol_tokenizer, timeout=60
    ) as teacher:
        assert teacher.identity.startswith(f"openai:{llama.url}:")
        assert teacher.identity.endswith(".gguf")
        [answer] = teacher.chat([CAPITAL], GenParams(max_tokens=12))
        assert isinstance(answer, Completion)
        assert answer.text.strip() and 0 < answer.completion_tokens <= 12
        assert abs(answer.prompt_tokens - teacher.count_tokens(CAPITAL)) <= 2


def test_llama_server_context_is_learned(
    llama: LlamaServer, smol_tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """llama-cpp-python does not advertise n_ctx; a cut answer or its overflow answer teach it."""
    with caplog.at_level(logging.WARNING, logger="pipeline.sdg.teacher"):
        teacher = OpenAITeacher(llama.url, tokenizer=smol_tokenizer, timeout=60, **FAST)
    with teacher:
        assert teacher.context_window == DEFAULT_CONTEXT_WINDOW
        assert "does not say how long its context is" in caplog.text
        story = "The quick brown fox jumps over the lazy dog. " * 44
        near_full = ask(story + "\nWrite a long story about the fox and the dog.")
        assert 470 < teacher.count_tokens(near_full) < 512 - 16  # a few tokens left to answer
        [cut] = teacher.chat([near_full], GenParams(max_tokens=64))
        assert isinstance(cut, Completion) and cut.finish_reason == "length"
        assert cut.prompt_tokens + cut.completion_tokens == llama.n_ctx
        assert teacher.context_window == llama.n_ctx
    with OpenAITeacher(llama.url, tokenizer=smol_tokenizer, timeout=60, **FAST) as teacher:
        [result] = teacher.chat([ask("hello " * 600)], GenParams(max_tokens=16))
        assert isinstance(result, Failure)
        assert "does not fit the teacher's 512-token context" in result.reason
        assert teacher.context_window == llama.n_ctx


# -- secrets ------------------------------------------------------------------------------------


def test_url_credentials_and_api_key_never_show(server: ScriptedTeacherServer) -> None:
    from pipeline.redact import redact

    secret_url = server.url.replace("http://", "http://robot:pw-SECRET@")
    with OpenAITeacher(secret_url, api_key="sk-SECRET-key", **FAST) as teacher:
        # The cache key is the one of the same URL without credentials.
        assert teacher.identity == f"openai:{server.url}:scripted"
        assert teacher.base_url == server.url and teacher.public_name == "scripted"
        assert "SECRET" not in repr(teacher)
        server.fail_next(500, 500, 500, 500)
        with pytest.raises(TeacherError) as failed:
            teacher.chat([[{"role": "user", "content": "hi"}]], GenParams())
    message, public = str(failed.value), failed.value.public
    assert "SECRET" not in message and server.url in message  # the operator sees where
    assert public == "the teacher (scripted) keeps failing (HTTP 500)"
    assert f"127.0.0.1:{server.port}" not in public
    assert redact(f"at {secret_url}: no") == f"at http://***@127.0.0.1:{server.port}/v1: no"


def test_unreachable_teacher_error_hides_credentials() -> None:
    url = f"http://robot:pw-SECRET@127.0.0.1:{free_port()}/v1"
    with pytest.raises(TeacherError) as failed:
        OpenAITeacher(url, api_key="sk-SECRET", retries=0)
    assert "SECRET" not in str(failed.value) and "cannot reach" in str(failed.value)
    assert failed.value.public == "the teacher cannot be reached"


@pytest.mark.parametrize(
    ("model", "public"),
    [
        ("/srv/models/qwen2.5-7b-instruct.Q4_K_M.gguf", "qwen2.5-7b-instruct.Q4_K_M.gguf"),
        ("C:\\models\\phi-3.gguf", "phi-3.gguf"),
        ("ibm-granite/granite-3.0-8b-instruct", "granite-3.0-8b-instruct"),
        ("", "teacher"),
    ],
)
def test_public_name_is_the_model_not_its_path(model: str, public: str) -> None:
    from pipeline.sdg.teacher import public_model_name

    assert public_model_name(model) == public


@pytest.mark.parametrize("spec", ["ftp://robot:pw-SECRET@host/v1", "http://robot:pw-SECRET@:x/v1"])
def test_bad_teacher_specs_are_reported_without_credentials(spec: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as refused:
        make_teacher(spec, cache_dir=tmp_path)
    assert "SECRET" not in str(refused.value)


def test_cli_generate_keeps_credentials_out_of_output_and_files(
    run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.redact import redact_config
    from tests.support.scripted_teacher import scripted

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    monkeypatch.setenv("LABBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LABBOT_TEACHER_API_KEY", "sk-SECRET-cli")
    with ScriptedTeacherServer(scripted) as server:
        plain = server.url
        secret_url = plain.replace("http://", "http://robot:pw-SECRET@")
        args = ["generate", "taxonomy/compositional_skills", "--teacher", secret_url]
        done = run_cli([*args, "--samples", "2", "--out", str(tmp_path / "gen")])
        assert done.code == 0, done.err
        server.fail_next(500, 500, 500, 500)
        failed = run_cli([*args, "--samples", "2", "--out", str(tmp_path / "g2"), "--no-cache"])
    assert failed.code == 3 and "keeps failing" in failed.err  # 3: an external service
    written = "".join(p.read_text() for p in (tmp_path / "gen").iterdir())
    written += "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json*"))
    for text in (done.out, done.err, failed.out, failed.err, written):
        assert "SECRET" not in text
    assert f"openai:{plain}:scripted" in written  # the cache key of the plain URL
    shown = redact_config({"teacher": secret_url, "generate": {"samples": 2}, "seed": 1})
    assert shown == {
        "teacher": plain.replace("http://", "http://***@"),
        "generate": {"samples": 2},
        "seed": 1,
    }
