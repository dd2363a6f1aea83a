"""A validator that misbehaves on demand, for the App's isolation tests (imported by name in
the validation child process; never by the App itself).

The file's content picks the misbehaviour: ``#crash`` dies of SIGSEGV as a C parser bug would,
``#hang`` never returns, ``#hog`` allocates memory without end, ``#exit`` leaves with status 3;
anything else is validated normally.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from pipeline.taxonomy.findings import FileResult
from pipeline.taxonomy.validate import validate_bytes


def validate(raw: bytes, path: str, *args: Any) -> FileResult:
    if b"#crash" in raw:
        os.kill(os.getpid(), signal.SIGSEGV)
    if b"#hang" in raw:
        while True:
            time.sleep(1)
    if b"#hog" in raw:
        hoard = []
        while True:
            hoard.append(bytearray(64 * 1024 * 1024))
    if b"#exit" in raw:
        os._exit(3)
    return validate_bytes(raw, path, *args)
