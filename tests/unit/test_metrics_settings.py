"""The App's /metrics page (prometheus_client) and its LABBOT_* settings (pydantic-settings)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.errors import SettingsError
from bot.metrics import MAX_SERIES, Metrics
from bot.settings import from_env


def test_metrics_keep_their_names_and_parse_as_prometheus_text() -> None:
    m = Metrics()
    m.delivery("pull_request", "queued", 0.003)
    m.job("validate", "success", 1.5)
    m.github_call("/repos/{owner}/{repo}/check-runs", 201)
    text = m.render(2, 4.5, {"pending": 1, "leased": 1})
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {
        "labbot_deliveries",
        "labbot_ack_seconds",
        "labbot_jobs",
        "labbot_job_seconds",
        "labbot_github_calls",
        "labbot_queue_depth",
        "labbot_queue_oldest_age_seconds",
    } <= set(families)
    assert "labbot_github_rate_limit_remaining" not in families  # GitHub has not said yet
    assert 'labbot_deliveries_total{event="pull_request",outcome="queued"} 1' in text
    assert 'labbot_jobs{state="pending"} 1' in text and "labbot_queue_depth 2" in text
    assert "_created" not in text
    m.rate_limit_remaining = 4999
    assert "labbot_github_rate_limit_remaining 4999" in m.render(0, 0.0, {})


@pytest.mark.parametrize("family", ["delivery", "job", "github_call"])
def test_every_family_is_capped_at_200_label_sets(family: str) -> None:
    m = Metrics()
    for i in range(MAX_SERIES + 100):
        if family == "delivery":
            m.delivery(f"event-{i}", "no_jobs")
        elif family == "job":
            m.job(f"kind-{i}", "success", 0.1)
        else:
            m.github_call(f"/route/{i}", 200)
    text = m.render(0, 0.0, {})
    assert f"-{MAX_SERIES + 50}" not in text
    samples = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.endswith("_total")
    ]
    overflow = [s for s in samples if "other" in s.labels.values()]
    assert len(samples) <= MAX_SERIES + 1 and overflow and overflow[0].value == 100


def test_settings_problems_are_one_line_each_and_never_echo_secrets() -> None:
    env = {
        "LABBOT_APP_ID": "twelve",
        "LABBOT_WEBHOOK_SECRET": "hush-1",
        "LABBOT_PRIVATE_KEY": "hush-2 not a pem",
        "LABBOT_METRICS_TOKEN": "hush-3",
        "LABBOT_DATABASE_URL": "mysql://u:hush-4@db/x",
        "LABBOT_WORKERS": "0",
        "LABBOT_VALIDATE_MEMORY_MB": "-5",
        "LABBOT_TEACHER_CONCURRENCY": "1.5",
        "LABBOT_BODY_TIMEOUT_SECONDS": "inf",
    }
    with pytest.raises(SettingsError) as info:
        from_env(env)
    text = str(info.value)
    assert "hush" not in text and "pydantic" not in text and "errors.pydantic.dev" not in text
    lines = text.splitlines()
    assert lines[0] == "labbot cannot start:" and len(lines) == 1 + len(info.value.problems)
    for var in (
        "LABBOT_APP_ID must be a number, not 'twelve'",
        "not a PEM private key",
        "LABBOT_DATABASE_URL must be a PostgreSQL URL",
        "LABBOT_WORKERS must be a number from 1 to 64, not '0'",
        "LABBOT_VALIDATE_MEMORY_MB must be a positive number, not '-5'",
        "LABBOT_TEACHER_CONCURRENCY must be a whole number",
        "LABBOT_BODY_TIMEOUT_SECONDS must be a positive number, not 'inf'",
    ):
        assert sum(var in line for line in lines) == 1, var


def test_settings_name_every_missing_requirement() -> None:
    with pytest.raises(SettingsError) as info:
        from_env({"LABBOT_WEBHOOK_SECRET": ""})  # empty counts as unset
    joined = "\n".join(info.value.problems)
    assert "LABBOT_APP_ID is not set" in joined
    assert "LABBOT_WEBHOOK_SECRET is not set" in joined
    assert "no private key" in joined and len(info.value.problems) == 3
