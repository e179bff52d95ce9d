"""YAML configs: a file can extend another and state only what it changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rlcyclegan.config import ConfigError, load_config


@dataclass
class Inner:
    a: int = 0
    b: int = 0


@dataclass
class Outer:
    name: str = ""
    inner: Inner = field(default_factory=Inner)
    items: list[int] = field(default_factory=list)


def test_a_config_extends_its_base_key_by_key_and_overrides_come_last(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("name: base\ninner: {a: 1, b: 2}\nitems: [1, 2, 3]\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("extends: ../base.yaml\ninner: {b: 5}\nitems: [9]\n")
    config = load_config(Outer, tmp_path / "sub" / "child.yaml", ["inner.a=7"])
    assert config == Outer(name="base", inner=Inner(a=7, b=5), items=[9])  # lists replace, mappings merge


def test_configs_that_extend_each_other_in_a_circle_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(Outer, tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_config(Outer, tmp_path / "c.yaml")
