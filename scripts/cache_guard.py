#!/usr/bin/env python3
"""Verify or discard the build's caches on a persistent runner, and say where each came from.

A self-hosted runner keeps its caches (labbot's generated data and converted model, pip's
wheels, Hugging Face downloads) between jobs. Anything else that ran on the machine in between
could have changed them. This script keeps a manifest per cache (sha256, size and mode of every
file; symlinks by target) outside the caches, written by a build when it finishes, and checks a
cache against it before the next build uses it:

    verify  NAME DIR   matches its manifest: "restored, verified"; no manifest, a file added,
                       removed or changed, or a bad signature: the folder is discarded and the
                       build rebuilds it ("rebuilt: <why>"); an empty or missing folder: "built"
    record  NAME DIR   write DIR's manifest (after the build) and a copy into the run directory
    summary            a Markdown table of where every cache came from, for the job summary

With ``LABBOT_CACHE_KEY`` in the environment (a repository secret, which workflows started from
forks never receive), each manifest carries an HMAC-SHA256 of its content, so a job that can
rewrite the caches but does not hold the key cannot write a manifest the next build accepts.

Manifests live in ``--state`` (default ``$LABBOT_CACHE_STATE``, else
``~/.local/state/labbot/cache-manifests``); each verdict is appended to
``<run dir>/caches.json``. Stdlib only: it runs before the venv exists. Exit status: 0, or 2 on
a usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import Any

KEY_ENV = "LABBOT_CACHE_KEY"
VERSION = 1


def scan(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``folder`` by relative path: sha256, size and mode; symlinks by target."""
    out: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(filenames) + [d for d in dirnames if (base / d).is_symlink()]:
            path = base / name
            rel = path.relative_to(folder).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                out[rel] = {"link": os.readlink(path)}
                continue
            if not stat.S_ISREG(info.st_mode):
                out[rel] = {"special": stat.S_IFMT(info.st_mode)}
                continue
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            out[rel] = {
                "sha256": digest.hexdigest(),
                "size": info.st_size,
                "exec": bool(info.st_mode & 0o111),
            }
    return out


def _signature(files: dict[str, Any], key: str) -> str:
    body = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def make_manifest(name: str, folder: Path, run_id: str, key: str | None) -> dict[str, Any]:
    files = scan(folder) if folder.is_dir() else {}
    manifest: dict[str, Any] = {
        "version": VERSION,
        "cache": name,
        "path": str(folder),
        "run_id": run_id,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    if key:
        manifest["hmac_sha256"] = _signature(files, key)
    return manifest


def differences(expected: dict[str, Any], actual: dict[str, Any], limit: int = 3) -> list[str]:
    """What differs between two scans, described, at most ``limit`` items plus a count."""
    out: list[str] = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            out.append(f"{rel} removed")
        elif rel not in expected:
            out.append(f"{rel} added")
        elif expected[rel] != actual[rel]:
            out.append(f"{rel} changed")
    if len(out) > limit:
        return [*out[:limit], f"{len(out) - limit} more"]
    return out


def verify(name: str, folder: Path, state: Path, key: str | None) -> dict[str, Any]:
    """Check ``folder`` against its manifest; discard it when it does not match."""
    verdict: dict[str, Any] = {"cache": name, "path": str(folder)}
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return {**verdict, "origin": "built", "detail": "empty: this build fills it"}
    manifest_path = state / f"{name}.json"
    reason = None
    manifest: dict[str, Any] = {}
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
            reason = "its manifest is unreadable"
    except FileNotFoundError:
        reason = "no manifest from an earlier build"
    except (OSError, ValueError):
        reason = "its manifest is unreadable"
    if reason is None and manifest.get("path") != str(folder):
        reason = f"its manifest is for {manifest.get('path')}"
    if reason is None and key:
        signed = manifest.get("hmac_sha256")
        if not isinstance(signed, str) or not hmac.compare_digest(
            signed, _signature(manifest.get("files", {}), key)
        ):
            reason = f"its manifest is not signed with {KEY_ENV}"
    if reason is None:
        diff = differences(manifest.get("files", {}), scan(folder))
        if diff:
            reason = (
                "it changed since build " + str(manifest.get("run_id")) + ": " + "; ".join(diff)
            )
    if reason is not None:
        discard(folder)
        return {**verdict, "origin": "rebuilt", "detail": reason}
    count = len(manifest["files"])
    size = sum(int(f.get("size", 0)) for f in manifest["files"].values())
    return {
        **verdict,
        "origin": "restored, verified",
        "detail": f"{count} files, {size:,} bytes, as build {manifest.get('run_id')} left them"
        + ("" if key else f" (manifest unsigned: set {KEY_ENV})"),
    }


def discard(folder: Path) -> None:
    """Remove a cache that cannot be trusted (a symlink itself, never what it points to)."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)


def record(
    name: str, folder: Path, state: Path, run_dir: Path, run_id: str, key: str | None
) -> None:
    manifest = make_manifest(name, folder, run_id, key)
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    state.mkdir(parents=True, exist_ok=True)
    tmp = state / f".{name}.json.tmp"
    tmp.write_text(text)
    tmp.replace(state / f"{name}.json")
    copies = run_dir / "cache-manifests"
    copies.mkdir(parents=True, exist_ok=True)
    (copies / f"{name}.json").write_text(text)
    _append(run_dir, {"cache": name, "path": str(folder), "recorded": len(manifest["files"])})


def _append(run_dir: Path, entry: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "caches.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries.append(entry)
    path.write_text(json.dumps(entries, indent=1) + "\n")


def summary(run_dir: Path) -> str:
    path = run_dir / "caches.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    verdicts = [e for e in entries if "origin" in e]
    if not verdicts:
        return "## Caches\n\nThe caches were not checked (the build stopped before).\n"
    lines = ["## Caches", "", "| cache | folder | came from | details |", "|---|---|---|---|"]
    for e in verdicts:
        cells = [e["cache"], f"`{e['path']}`", e["origin"], e["detail"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    recorded = [e["cache"] for e in entries if "recorded" in e]
    if recorded:
        lines += ["", "Manifests recorded for the next build: " + ", ".join(recorded) + "."]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    ).replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("verify", "record", "summary"))
    parser.add_argument("caches", nargs="*", help="NAME=DIR pairs")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--run-id", default=os.environ.get("GITHUB_RUN_ID", "local"))
    default_state = os.environ.get("LABBOT_CACHE_STATE") or str(
        Path.home() / ".local" / "state" / "labbot" / "cache-manifests"
    )
    parser.add_argument("--state", type=Path, default=Path(default_state))
    args = parser.parse_args(argv)
    key = os.environ.get(KEY_ENV) or None
    if args.action == "summary":
        sys.stdout.write(summary(args.run_dir))
        return 0
    pairs = []
    for item in args.caches:
        name, sep, folder = item.partition("=")
        if not sep or not name.isidentifier() or not folder.startswith("/"):
            parser.error(f"{item!r}: caches are NAME=/absolute/folder")
        pairs.append((name, Path(folder)))
    for name, folder in pairs:
        if args.action == "verify":
            verdict = verify(name, folder, args.state, key)
            _append(args.run_dir, verdict)
            print(f"{name}: {verdict['origin']} ({verdict['detail']})")
        else:
            record(name, folder, args.state, args.run_dir, args.run_id, key)
            print(f"{name}: manifest recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
