"""Content keys and atomic JSON: what the pipeline's evaluation cache rests on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rlcyclegan.fileio import content_key, read_json_cache, write_json_atomically


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"\x00\x01")
    (root / "sub" / "b.txt").write_text("weights")
    return root


def test_content_key_follows_content_and_settings_not_location_or_time(tmp_path: Path) -> None:
    here, there = _tree(tmp_path / "here"), _tree(tmp_path / "there")
    os.utime(there / "a.bin", (0, 0))
    assert content_key([here], {"steps": 5}) == content_key([there], {"steps": 5})
    assert content_key([here], {"steps": 5}) != content_key([here], {"steps": 6})
    (there / "sub" / "b.txt").write_text("weightz")
    assert content_key([here], {}) != content_key([there], {})
    (there / "sub" / "b.txt").rename(there / "b.txt")  # same bytes under another name
    (here / "sub" / "b.txt").write_text("weightz")
    assert content_key([here], {}) != content_key([there], {})
    # a file counts by content; the order of the paths matters (they are different inputs)
    assert content_key([here / "a.bin"], {}) == content_key([there / "a.bin"], {})
    assert content_key([here / "a.bin", there], {}) != content_key([there, here / "a.bin"], {})


def test_content_key_of_a_missing_path_says_which(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        content_key([tmp_path / "nowhere"], {})


def test_write_json_atomically_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    write_json_atomically(path, {"a": 1})
    write_json_atomically(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]


def test_a_cache_that_is_missing_or_damaged_reads_as_empty_and_says_so(tmp_path: Path, capsys) -> None:
    cache = tmp_path / "evaluation.json"
    assert read_json_cache(cache, "every job runs again") == {}
    write_json_atomically(cache, {"job": {"key": "k", "result": 1.5}})
    assert read_json_cache(cache, "every job runs again") == {"job": {"key": "k", "result": 1.5}}
    assert capsys.readouterr().out == ""
    cache.write_text('{"job": {"key": "k", "res')  # a write cut off by hand or by another tool
    assert read_json_cache(cache, "every job runs again") == {}
    assert capsys.readouterr().out.strip() == f"{cache} is not valid JSON; every job runs again"
