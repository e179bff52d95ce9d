"""Episode shards and dataset metadata on disk: round trip, atomic writes, and rejection of damaged files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from rlcyclegan.data.storage import (
    Episode,
    list_shards,
    open_shard,
    read_episode,
    read_metadata,
    remove_partial_files,
    write_episode,
    write_metadata,
)


def make_episode(episode_id: int = 3, steps: int = 7, size: int = 16, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    terminations = np.zeros(steps, dtype=bool)
    truncations = np.zeros(steps, dtype=bool)
    truncations[-1] = True
    return Episode(
        episode_id=episode_id,
        seed=100 + episode_id,
        frames=rng.integers(0, 256, size=(steps + 1, size, size, 3), dtype=np.uint8),
        actions=rng.uniform(-1, 1, size=(steps, 6)).astype(np.float32),
        rewards=rng.normal(size=steps),
        terminations=terminations,
        truncations=truncations,
        qpos=rng.normal(size=(steps + 1, 9)),
        qvel=rng.normal(size=(steps + 1, 9)),
        domain_spec={"name": "randomized", "visual": {"floor_rgb1": [0.1, 0.2, 0.3]}},
    )


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_episode_round_trip_is_exact(tmp_path, compression):
    episode = make_episode()
    path = write_episode(tmp_path, episode, compression)
    back = read_episode(path, episode.episode_id)
    for name in ("frames", "actions", "rewards", "terminations", "truncations", "qpos", "qvel"):
        np.testing.assert_array_equal(getattr(back, name), getattr(episode, name), err_msg=name)
    assert (back.episode_id, back.seed, back.domain_spec) == (episode.episode_id, episode.seed, episode.domain_spec)


def test_shard_uses_minari_episode_layout_with_compressed_uint8_frames(tmp_path):
    path = write_episode(tmp_path, make_episode(episode_id=5, steps=4), "gzip")
    with h5py.File(path, "r") as file:
        group = file["episode_5"]
        assert {"observations", "actions", "rewards", "terminations", "truncations", "infos"} <= set(group)
        assert set(group["infos"]) == {"qpos", "qvel"}
        frames = group["observations"]
        assert frames.shape == (5, 16, 16, 3) and frames.dtype == np.uint8
        assert frames.compression == "gzip" and frames.chunks is not None
        assert group.attrs["total_steps"] == 4 and group.attrs["id"] == 5


def test_write_leaves_no_partial_file_and_readers_ignore_partials(tmp_path):
    write_episode(tmp_path, make_episode(episode_id=0), "gzip")
    assert [p.name for p in tmp_path.iterdir()] == ["episode_000000.h5"]
    (tmp_path / "episode_000001.h5.1234.tmp").write_bytes(b"half a shard")
    assert list(list_shards(tmp_path)) == [0]
    assert remove_partial_files(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["episode_000000.h5"]


def test_episode_with_inconsistent_lengths_is_refused(tmp_path):
    episode = make_episode(steps=5)
    episode.qpos = episode.qpos[:-1]
    with pytest.raises(ValueError, match="qpos has 5 entries, expected 6"):
        write_episode(tmp_path, episode)
    assert not list(tmp_path.iterdir())


def test_garbage_shard_is_rejected_with_one_line(tmp_path):
    path = tmp_path / "episode_000000.h5"
    path.write_bytes(b"this is not HDF5" * 64)
    with pytest.raises(ValueError, match="episode_000000.h5 is corrupt") as err:
        open_shard(path)
    assert "\n" not in str(err.value)


def test_truncated_shard_is_rejected(tmp_path):
    path = write_episode(tmp_path, make_episode(steps=30, size=32), "none")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match="corrupt"):
        read_episode(path, 3)


def test_shard_missing_a_dataset_is_rejected(tmp_path):
    path = write_episode(tmp_path, make_episode(episode_id=0), "gzip")
    with h5py.File(path, "a") as file:
        del file["episode_0/rewards"]
    with pytest.raises(ValueError, match="lacks rewards"):
        read_episode(path, 0)


def test_metadata_round_trip_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_metadata(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no metadata.json"):
        read_metadata(tmp_path)
    collection = {"domain": {"name": "sim"}, "policy": {"kind": "random"}, "seed": 3, "image_size": 16,
                  "frame_stack": 3, "max_steps": 10}
    metadata = {"format": "rlcyclegan-rollouts", "format_version": 1, "collection": collection}
    write_metadata(tmp_path, metadata)
    assert read_metadata(tmp_path) == metadata
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.json"]
    (tmp_path / "metadata.json").write_text('{"format": "rlcyclegan-rollouts", "form')
    with pytest.raises(ValueError, match="metadata.json is corrupt"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="does not describe"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({**metadata, "format_version": 99}))
    with pytest.raises(ValueError, match="upgrade rlcyclegan"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({**metadata, "collection": {"seed": 3}}))
    with pytest.raises(ValueError, match="lack domain, policy, image_size, frame_stack, max_steps"):
        read_metadata(tmp_path)
