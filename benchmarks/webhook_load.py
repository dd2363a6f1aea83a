"""Benchmark the App on loopback against the fake GitHub, and print the figures.

The load generator is wrk when it is installed (`apt-get install wrk`: C, one thread, so it
barely takes CPU from the server on a 2-core machine), else Python clients
(`--python-clients` forces them).

1. 1,000 signed pull_request deliveries from 50 concurrent clients: how many were recorded
   (none may be lost) and the acknowledgement latency (p50, p99; target p99 <= 50 ms).
2. A 5-file pull request, from delivery to a completed labbot/validate check run (target
   p50 <= 1 s), over 10 pull requests.

    .venv/bin/python benchmarks/webhook_load.py

With ``--database-url URL`` (a PostgreSQL server the benchmark may create databases on, or
``auto`` for a throwaway local cluster with fsync on), it instead compares the engines in one
run: SQLite with one replica, PostgreSQL with 1 and with 3 replicas, each on a fresh database.
1,000 deliveries for 200 pull requests from 50 Python clients spread over the replicas:
acknowledgement p50/p99, then validate jobs per second until the queue is empty.

    .venv/bin/python benchmarks/webhook_load.py --database-url auto
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.app import Server, settings_for, wait_for  # noqa: E402
from tests.support.fakegithub import FakeGitHub, encode_payload, webhook_headers  # noqa: E402
from tests.support.samples import SKILL  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _client_process(
    port: int | list[int],
    threads: int,
    count: int,
    body: bytes | list[bytes],
    secret: str,
    seed: int,
    start_all: Any,
    results: Any,
) -> None:
    """One load-generator process: ``threads`` keep-alive connections, ``count`` each.
    Lists of ports and bodies are dealt round-robin: connection n to port n, delivery i of
    body i (the same delivery order in every process)."""
    import http.client
    import threading

    out: list[tuple[int, float]] = []
    lock = threading.Lock()
    ready = threading.Barrier(threads + 1)
    go = threading.Event()

    def run(n: int) -> None:
        # Sign every delivery before the clock starts: signing is GitHub's work, not the App's.
        bodies = body if isinstance(body, list) else [body]
        signed = [
            (
                bodies[(n * count + i) % len(bodies)],
                webhook_headers(
                    "pull_request",
                    bodies[(n * count + i) % len(bodies)],
                    secret,
                    delivery_id=f"{seed}-{n}-{i}-{uuid.uuid4()}",
                ),
            )
            for i in range(count)
        ]
        ports = port if isinstance(port, list) else [port]
        conn = http.client.HTTPConnection("127.0.0.1", ports[n % len(ports)], timeout=30)
        conn.connect()
        ready.wait()
        go.wait()
        mine = []
        for data, headers in signed:
            start = time.perf_counter()
            conn.request("POST", "/webhook", body=data, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append((response.status, time.perf_counter() - start))
        conn.close()
        with lock:
            out.extend(mine)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    ready.wait()  # every connection of this process is open
    if start_all is not None:
        start_all.wait()  # ... and of every other process
    go.set()
    for t in workers:
        t.join()
    results.put(out)


def _load(
    port: int | list[int], body: bytes | list[bytes], secret: str, clients: int, total: int
) -> list[tuple[int, float]]:
    """``clients`` concurrent keep-alive connections over 2 processes, ``total`` deliveries.

    Every connection is opened, in every process, before the first delivery is timed: the
    burst of TCP handshakes and Python start-up is the load generator's cost, not the App's.
    """
    import multiprocessing
    import queue as queue_mod

    procs = 2
    ctx = multiprocessing.get_context("spawn")
    warm: queue_mod.Queue[list[tuple[int, float]]] = queue_mod.Queue()
    _client_process(
        port, 1, 20, body[:1] if isinstance(body, list) else body, secret, -1, None, warm
    )
    start_all = ctx.Barrier(procs)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_client_process,
            args=(port, clients // procs, total // clients, body, secret, p, start_all, results),
        )
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    parts = [results.get(timeout=300) for _ in workers]
    for w in workers:
        w.join()
    return [r for part in parts for r in part]


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = io.open(BODY_FILE, "rb"):read("*a")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "pull_request"
wrk.headers["X-Hub-Signature-256"] = SIGNATURE
wrk.headers["User-Agent"] = "GitHub-Hookshot/labbot-bench"
local sent, answered, statuses = 0, 0, {}
-- Every request is formatted before the clock starts: building a 21 KB string per request
-- inside wrk's one thread (and collecting it) would be the load generator's cost, not the App's.
local prepared = {}
init = function(args)
  for i = 1, TOTAL + 200 do
    wrk.headers["X-GitHub-Delivery"] = "wrk-" .. i .. "-" .. RUN
    prepared[i] = wrk.format()
  end
end
request = function()
  sent = sent + 1
  if prepared[sent] == nil then
    wrk.headers["X-GitHub-Delivery"] = "wrk-" .. sent .. "-" .. RUN
    return wrk.format()
  end
  return prepared[sent]
end
response = function(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  if answered >= TOTAL then wrk.thread:stop() end
end
done = function(summary, latency, requests)
  io.write(string.format("WRK %d %d %d %.3f %.3f %.3f %.3f\\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
    + summary.errors.timeout, summary.duration, latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def _load_wrk(
    port: int, body: bytes, secret: str, clients: int, total: int, tmp: Path
) -> list[tuple[int, float]]:
    """The same load from wrk: a C load generator barely takes CPU from the server. Every
    delivery carries its own X-GitHub-Delivery id; the body (so the signature) is shared."""
    import hashlib
    import hmac
    import subprocess

    body_file = tmp / "body.json"
    body_file.write_bytes(body)
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    script = tmp / "deliveries.lua"
    script.write_text(
        f'BODY_FILE = "{body_file}"\nSIGNATURE = "{signature}"\nTOTAL = {total}\n'
        f'RUN = "{uuid.uuid4().hex[:8]}"\n' + _WRK_SCRIPT
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{clients}",
            "-d60s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/webhook",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK "))
    _, requests, errors, _duration, p50, p90, p99, worst = line.split()
    WRK_FIGURES["figures"] = (
        int(requests),
        int(errors),
        float(p50),
        float(p90),
        float(p99),
        float(worst),
    )
    # wrk reports percentiles, not single samples: return them as a distribution stand-in.
    return (
        [(202, float(p50) / 1000)] * 49 + [(202, float(p99) / 1000)] + [(202, float(worst) / 1000)]
    )


WRK_FIGURES: dict[str, tuple[int, int, float, float, float, float]] = {}


def _server_ack(metrics: str) -> str:
    """p50/p99 upper bounds from the labbot_ack_seconds histogram."""
    buckets = []
    for line in metrics.splitlines():
        if line.startswith("labbot_ack_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append(
                (float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1]))
            )
    total = buckets[-1][1] if buckets else 0
    out = []
    for q in (0.5, 0.99):
        bound = next((le for le, n in buckets if n >= q * total), float("inf"))
        out.append(f"p{int(q * 100)} <= {bound * 1000:g} ms")
    return ", ".join(out) + f" ({int(total)} deliveries)"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _serve(env: dict[str, str], data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--port", str(port)],
        env=dict(env, LABBOT_DATA_DIR=str(data_dir)),
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


def _fresh_database(server_url: str) -> str:
    """A new database on the server at ``server_url``; its URL."""
    import psycopg

    name = f"labbot_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    base, _, _ = server_url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name


def compare_backends(database_url: str) -> int:
    """SQLite x1, PostgreSQL x1 and x3 replicas, side by side (see the module docstring)."""
    import os

    cluster = None
    if database_url == "auto":
        from tests.support.pgcluster import PgCluster

        cluster = PgCluster(fsync=True).start()
        database_url = cluster.url()
    fake = FakeGitHub().start()
    scene = fake.quickstart("org/taxonomy", files={"README.md": "x\n"})
    pulls = [
        scene.repo.create_pull(head=f"bench-{i}", files={f"docs/{i}.md": "x\n"}) for i in range(200)
    ]
    bodies = [
        encode_payload(fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr))
        for pr in pulls
    ]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            key = Path(tmp) / "key.pem"
            key.write_text(scene.app.private_key_pem)
            env = {k: v for k, v in os.environ.items() if not k.startswith("LABBOT_")}
            env.update(
                LABBOT_APP_ID=str(scene.app.id),
                LABBOT_PRIVATE_KEY_PATH=str(key),
                LABBOT_WEBHOOK_SECRET=scene.app.webhook_secret,
                LABBOT_GITHUB_API_URL=fake.url,
                LABBOT_WORKERS="2",
                LABBOT_WRITE_INTERVAL_SECONDS="0",
                LABBOT_TEACHER="",
            )
            for label, engine, count in (
                ("SQLite, 1 replica", "sqlite", 1),
                ("PostgreSQL, 1 replica", "postgres", 1),
                ("PostgreSQL, 3 replicas", "postgres", 3),
            ):
                run_env = dict(env)
                if engine == "postgres":
                    run_env["LABBOT_DATABASE_URL"] = _fresh_database(database_url)
                shared = Path(tmp) / f"{engine}-{count}"
                servers = [
                    _serve(run_env, shared if engine == "sqlite" else Path(tmp) / f"{label}-{i}")
                    for i in range(count)
                ]
                ports = [port for _, port in servers]
                try:
                    for port in ports:
                        wait_for(
                            lambda p=port: _up(f"http://127.0.0.1:{p}"), timeout=60, what="serve"
                        )
                    start = time.perf_counter()
                    results = _load(ports, bodies, scene.app.webhook_secret, clients=50, total=1000)
                    health = f"http://127.0.0.1:{ports[0]}/healthz"
                    wait_for(
                        lambda url=health: httpx.get(url).json()["queue_depth"] == 0,
                        timeout=600,
                        what="an empty queue",
                    )
                    drained = time.perf_counter() - start
                    done = sum(
                        int(float(line.rsplit(" ", 1)[1]))
                        for port in ports
                        for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines()
                        if line.startswith('labbot_jobs_total{kind="validate"')
                    )
                finally:
                    for proc, _ in servers:
                        proc.terminate()
                        proc.wait(20)
                latencies = [t * 1000 for status, t in results if status == 202]
                rows.append(
                    (
                        label,
                        len(latencies),
                        len(results),
                        pct(latencies, 0.5),
                        pct(latencies, 0.99),
                        done,
                        done / drained,
                    )
                )
    finally:
        fake.stop(check=False)
        if cluster is not None:
            cluster.stop()
    print("1000 deliveries (200 pull requests), 50 Python clients spread over the replicas")
    print(f"{'engine':<24} {'202s':>9} {'ack p50':>9} {'ack p99':>9} {'jobs':>7} {'jobs/s':>7}")
    for label, ok, sent, p50, p99, done, rate in rows:
        print(f"{label:<24} {ok:>4}/{sent:<4} {p50:>6.1f} ms {p99:>6.1f} ms {done:>7} {rate:>7.1f}")
    base = rows[0][4]
    for label, _ok, _sent, _p50, p99, _done, _rate in rows[1:]:
        print(f"{label}: ack p99 {p99 / base:.2f}x SQLite's (goal <= 2x)")
    return 0


def main() -> int:
    if "--database-url" in sys.argv:
        at = sys.argv.index("--database-url")
        if at + 1 >= len(sys.argv):
            sys.stderr.write("--database-url needs a postgresql:// URL, or 'auto'\n")
            return 2
        return compare_backends(sys.argv[at + 1])
    fake = FakeGitHub().start()
    scene = fake.quickstart("org/taxonomy", files={"README.md": "x\n"})
    with tempfile.TemporaryDirectory() as tmp, Server(settings_for(fake, scene, Path(tmp))) as srv:
        import os
        import subprocess

        port = free_port()
        key = Path(tmp) / "key.pem"
        key.write_text(scene.app.private_key_pem)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABBOT_")}
        env.update(
            LABBOT_APP_ID=str(scene.app.id),
            LABBOT_PRIVATE_KEY_PATH=str(key),
            LABBOT_WEBHOOK_SECRET=scene.app.webhook_secret,
            LABBOT_GITHUB_API_URL=fake.url,
            LABBOT_DATA_DIR=str(Path(tmp) / "serve"),
            LABBOT_WORKERS="2",
            LABBOT_WRITE_INTERVAL_SECONDS="0",
        )
        root = Path(__file__).resolve().parent.parent
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--port", str(port)],
            env=env,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        serve_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _up(serve_url), what="labbot serve")
        pr = scene.repo.create_pull(head="load", files={"README.md": "load\n"})
        payload = fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr)
        body = encode_payload(payload)
        secret = scene.app.webhook_secret
        if "--ping" in sys.argv:
            body = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
        if shutil.which("wrk") and "--python-clients" not in sys.argv:
            results = _load_wrk(port, body, secret, clients=50, total=1000, tmp=Path(tmp))
            generator = "wrk (C, one thread, 50 connections)"
            warmup = 0
        else:
            results = _load(port, body, secret, clients=50, total=1000)
            generator = "Python (2 processes x 25 threads)"
            warmup = 20
        print(f"load generator: {generator}")
        metrics = httpx.get(serve_url + "/metrics").text
        proc.terminate()
        proc.wait(10)
        recorded = sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in metrics.splitlines()
            if line.startswith('labbot_deliveries_total{event="pull_request"')
        )
        latencies = [t * 1000 for s, t in results if s == 202]
        server_side = _server_ack(metrics)
        print(f"server-side acknowledgement time (request received to 202 written): {server_side}")
        if "figures" in WRK_FIGURES:
            sent, errors, p50, p90, p99, worst = WRK_FIGURES["figures"]
            print(
                f"{sent} deliveries (wrk stops at the 1,000th answer; the rest were in flight), "
                f"50 connections: {errors} errors, {recorded} recorded (answered and in flight), "
                f"lost {max(0, sent - recorded)}; "
                f"ack p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms, "
                f"max {worst:.1f} ms (target p99 <= 50 ms)"
            )
        else:
            print(
                f"1000 deliveries, 50 clients: {len(latencies)} acknowledged 202, "
                f"{recorded - warmup} recorded, lost {1000 - (recorded - warmup)}; ack p50 "
                f"{pct(latencies, 0.5):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms, max "
                f"{max(latencies):.1f} ms (target p99 <= 50 ms)"
            )

        fake.set_webhook_target(srv.url + "/webhook")
        durations = []
        for i in range(10):
            files = {
                f"taxonomy/compositional_skills/s{i}_{k}/qna.yaml": SKILL for k in range(5)
            } | {f"taxonomy/compositional_skills/s{i}_{k}/attribution.txt": "x\n" for k in range(5)}
            pr = scene.repo.create_pull(head=f"five-{i}", files=files)
            start = time.perf_counter()
            fake.deliver(
                "pull_request",
                fake.webhook_payload("pull_request", "opened", repo=scene.repo, pr=pr),
            )
            wait_for(
                lambda pr=pr: any(
                    r.status == "completed" and r.head_sha == pr.head_sha
                    for r in scene.repo.check_runs
                ),
                what="check run",
            )
            durations.append(time.perf_counter() - start)
        print(
            f"5-file PR, delivery to completed check run: p50 {statistics.median(durations):.3f} s,"
            f" max {max(durations):.3f} s over 10 PRs (target p50 <= 1 s)"
        )
    fake.stop(check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
