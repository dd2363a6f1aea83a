"""The ``labbot`` console script: the pipeline's commands plus ``serve`` for the App."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipeline.cli import build_parser, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
