"""The ``labbot`` console script: the pipeline's commands plus ``serve`` for the App.

This is the App's entry point: the only place that reads the environment for it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from pipeline.cli import build_parser, run
from pipeline.errors import ExitCode


def run_serve(args: argparse.Namespace) -> int:
    from bot.errors import SettingsError
    from bot.settings import from_env

    try:
        settings = from_env()
    except SettingsError as exc:  # one line per problem, under "labbot cannot start:"
        sys.stderr.write(f"{exc}\n")
        return exc.exit_code
    import uvicorn

    from bot.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings)
    # The standard library's event loop, not uvloop: under a burst of deliveries uvloop left a
    # few requests waiting 100-300 ms while the loop was busy with others (also with a bare
    # ASGI app that only burns 0.25 ms per request); asyncio's loop serves them in order
    # (benchmarks/webhook_load.py: ack p99 23-33 ms instead of 25-150 ms).
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="info", access_log=False, loop="asyncio"
    )
    return ExitCode.OK


def parser() -> argparse.ArgumentParser:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.add_parser(
        "serve",
        help="run the GitHub App (webhook server and workers)",
        description="Run the GitHub App. Settings come from LABBOT_* environment variables "
        "(see .env.example); it refuses to start without a webhook secret and a private key.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=run_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # CPU training and in-process generation share the cores with a teacher server or tests;
    # OpenMP threads that spin while waiting would starve them (measured: 5x slower).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return run(parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
