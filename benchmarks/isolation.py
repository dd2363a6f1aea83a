"""What validating in a child process costs, and what a file full of findings costs the App.

1. One real-sized qna.yaml validated in this process vs. in a warm child of
   ``bot.isolation.IsolatedValidator`` (p50 and p90 over 200 files), and a child's start.
2. A 5-file pull request from delivery to a completed ``labbot/validate`` check run through the
   whole App on loopback (uvicorn, SQLite, the fake GitHub), over 10 pull requests.
3. A file with 60,000 findings: time to a completed check run and API writes.

    .venv/bin/python benchmarks/isolation.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.isolation import IsolatedValidator  # noqa: E402
from pipeline.config import RepoConfig  # noqa: E402
from pipeline.taxonomy.validate import PROFILES, validate_bytes  # noqa: E402
from tests.support.app import ATTR, LEAF, Server, completed, settings_for, wait_for  # noqa: E402,I001
from tests.support.fakegithub import FakeGitHub  # noqa: E402
from tests.support.samples import SKILL  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def per_file() -> None:
    raw, config, profile = SKILL.encode(), RepoConfig(), PROFILES["pr"]
    inline = []
    for _ in range(200):
        t = time.perf_counter()
        validate_bytes(raw, LEAF, profile, config, b"t")
        inline.append(time.perf_counter() - t)
    validator = IsolatedValidator()
    t = time.perf_counter()
    validator.validate(raw, LEAF, profile, config, b"t")
    start = time.perf_counter() - t
    child = []
    for _ in range(200):
        t = time.perf_counter()
        validator.validate(raw, LEAF, profile, config, b"t")
        child.append(time.perf_counter() - t)
    validator.close()
    print(f"one file ({len(raw)} bytes), in process: p50 {statistics.median(inline) * 1000:.2f} ms")
    print(
        f"one file in a warm child:  p50 {statistics.median(child) * 1000:.2f} ms, "
        f"p90 {pct(child, 0.9) * 1000:.2f} ms "
        f"(overhead p50 {(statistics.median(child) - statistics.median(inline)) * 1000:.2f} ms)"
    )
    print(f"first file, child start included: {start * 1000:.0f} ms")


def through_the_app() -> None:
    with FakeGitHub() as fake, tempfile.TemporaryDirectory() as tmp:
        scene = fake.quickstart("org/taxonomy", files={"README.md": "taxonomy\n"})
        with Server(settings_for(fake, scene, Path(tmp))) as srv:
            fake.set_webhook_target(srv.url + "/webhook")
            time.sleep(2.0)  # the children start with the server
            latencies = []
            for i in range(10):
                files: dict[str, str | bytes | None] = {}
                for j in range(5):
                    files[LEAF.replace("units", f"u{i}-{j}")] = SKILL
                    files[ATTR.replace("units", f"u{i}-{j}")] = "Title of work: units\n"
                pr = scene.repo.create_pull(head=f"five-{i}", files=files)
                payload = fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
                t = time.perf_counter()
                fake.deliver("pull_request", payload)
                wait_for(lambda pr=pr: completed(scene, pr.head_sha), what="check run")
                latencies.append(time.perf_counter() - t)
            print(
                "5-file PR, delivery to completed check run: p50 "
                f"{statistics.median(latencies) * 1000:.0f} ms, "
                f"worst {max(latencies) * 1000:.0f} ms"
            )

            flood = SKILL + "# x \n" * 60_000
            pr = scene.repo.create_pull(
                head="flood", files={LEAF: flood, ATTR: "Title of work: units\n"}
            )
            fake.reset_calls()
            payload = fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
            t = time.perf_counter()
            fake.deliver("pull_request", payload)
            run = wait_for(lambda: completed(scene, pr.head_sha), timeout=120, what="flood")
            elapsed = time.perf_counter() - t
            wait_for(lambda: pr.live_comments, what="comment")
            time.sleep(0.5)
            writes = [c for c in fake.calls if c.method != "GET"]
            checks = [c for c in writes if "/check-runs" in c.path]
            print(
                f"60,000 findings: check run completed in {elapsed * 1000:.0f} ms with "
                f"{len(run.annotations)} annotations; {len(writes)} API writes "
                f"({len(checks)} to the check run), {len(fake.calls)} API calls in all"
            )


def main() -> int:
    per_file()
    through_the_app()
    return 0


if __name__ == "__main__":
    sys.exit(main())
