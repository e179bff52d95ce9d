"""Crash-safe file writing and content keys: what the dataset writer, the checkpointer and the pipeline share."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file or a directory) to disk, so a rename never publishes data still in the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: Path, data: Any) -> None:
    """``path`` holds either its old content or all of ``data``, never half of it (a killed run loses nothing)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    fsync_path(tmp)
    os.replace(tmp, path)


def read_json_cache(path: Path, when_unreadable: str) -> dict[str, Any]:
    """The mapping a cache file at ``path`` holds; ``{}`` when there is none or it is not valid JSON.

    A cache only saves work, so a damaged one is not an error: the work is done again, and the one-line
    message (``path``, then ``when_unreadable``) says so.
    """
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        print(f"{path} is not valid JSON; {when_unreadable}")
        return {}


def content_key(paths: Iterable[Path], settings: Mapping[str, Any]) -> str:
    """A digest of the files at ``paths`` (each a file, or a directory taken whole) and of ``settings``.

    Files count by content and by name relative to the path given, never by location or time stamp: a run
    directory copied or hard-linked elsewhere keeps its keys, and one changed byte or setting changes them.

    Raises:
        FileNotFoundError: if a path does not exist.
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"no file or directory at {root}")
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        digest.update(f"<{len(files)} files>".encode())
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode() if root.is_dir() else b"")
            with open(file, "rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()
