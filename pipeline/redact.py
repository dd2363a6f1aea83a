"""Keeping secrets out of what labbot prints, logs, writes to disk or posts on GitHub.

Two kinds of secret travel with labbot's settings: credentials written into a URL
(``http://user:token@host/v1``) and API keys given on their own. :func:`strip_credentials`
turns a URL into one that can be shown; :func:`redact` cleans any text (an error message, a
log line, a config dump) of URL credentials and of the given secret strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# scheme://userinfo@ : the userinfo is everything up to the last "@" before the host ends.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#\"'<>]*@")


def strip_credentials(url: str) -> str:
    """``url`` without a user name or password; the rest is kept as written."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def url_credentials(url: str) -> tuple[str, str] | None:
    """The ``(user, password)`` written into ``url`` (percent-decoded), or ``None``."""
    from urllib.parse import unquote

    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL credentials and every non-trivial secret string masked."""
    out = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def redact_config(data: Any) -> Any:
    """A copy of a JSON-like config in which every string has its URL credentials masked."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, Mapping):
        return {k: redact_config(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_config(v) for v in data]
    return data
