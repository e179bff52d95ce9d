"""Loaders: frame stacks within episodes, cache and streaming alike, unpaired sampling, image folders, bad input."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from rlcyclegan.data.batches import TransitionBatch
from rlcyclegan.data.collect import CollectConfig, collect
from rlcyclegan.data.loaders import (
    ImageFolderDataset,
    RolloutDataset,
    UnpairedDataset,
    check_image_size,
    collate_transitions,
)
from rlcyclegan.data.storage import list_shards

SIZE = 16
STEPS = 12
EPISODES = 3


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """A sim and a real dataset, same seed: their random actions agree step for step."""
    root = tmp_path_factory.mktemp("rollouts")
    for domain in ("sim", "real"):
        collect(CollectConfig(out=root / domain, domain=domain, episodes=EPISODES, workers=1, image_size=SIZE,
                              max_steps=STEPS, seed=11), progress=False)
    return root


def expected_stack(frames: np.ndarray, t: int, k: int) -> np.ndarray:
    """The stack at step ``t`` built the slow way: frames t-k+1..t of one episode, the first one repeated."""
    rows = [frames[max(i, 0)] for i in range(t - k + 1, t + 1)]
    return np.concatenate(rows, axis=-1).transpose(2, 0, 1)  # (3k, H, W)


@pytest.mark.parametrize("k", [1, 4])
def test_stacks_stay_inside_their_episode(datasets, k):
    dataset = RolloutDataset(datasets / "sim", frame_stack=k)
    assert len(dataset) == EPISODES * (STEPS - 1)  # the truncated last step of each episode has no next action
    batch = dataset.get_batch(np.arange(len(dataset)))
    row = 0
    for episode in dataset.episodes():
        for t in range(STEPS - 1):
            np.testing.assert_array_equal(batch.obs[row].numpy(), expected_stack(episode.frames, t, k))
            np.testing.assert_array_equal(batch.next_obs[row].numpy(), expected_stack(episode.frames, t + 1, k))
            np.testing.assert_array_equal(batch.action[row].numpy(), episode.actions[t])
            np.testing.assert_array_equal(batch.next_action[row].numpy(), episode.actions[t + 1])
            assert batch.reward[row].item() == pytest.approx(episode.rewards[t])
            row += 1
    first_of_episode = [e * (STEPS - 1) for e in range(1, EPISODES)]
    for row in first_of_episode:  # the stack at an episode's start repeats its first frame, nothing older
        stack = batch.obs[row].reshape(k, 3, SIZE, SIZE)  # (k, 3, H, W)
        assert all(torch.equal(stack[0], frame) for frame in stack)
    assert batch.terminated.sum() == 0  # HalfCheetah only truncates


def same_batch(a: TransitionBatch, b: TransitionBatch) -> bool:
    """Field by field; fields a source leaves empty must be empty in both."""
    return all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
               for x, y in zip(a, b, strict=True))


def test_batches_have_the_trainer_contract(datasets):
    dataset = RolloutDataset(datasets / "sim", frame_stack=3)
    batch = dataset.sample(5, np.random.default_rng(0))
    assert isinstance(batch, TransitionBatch) and batch.has_transitions
    assert batch.obs.shape == batch.next_obs.shape == (5, 9, SIZE, SIZE) and batch.obs.dtype == torch.uint8
    assert batch.action.shape == batch.next_action.shape == (5, 6) and batch.action.dtype == torch.float32
    assert batch.reward.shape == batch.terminated.shape == (5,) and batch.reward.dtype == torch.float32
    assert batch.paired_obs is None  # ground truth only ever comes from a PairedSource
    assert same_batch(batch, dataset.sample(5, np.random.default_rng(0)))
    single = dataset[7]
    assert single.obs.shape == (9, SIZE, SIZE)
    assert torch.equal(single.obs, dataset.get_batch([7]).obs[0])
    loaded = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate_transitions)))
    assert loaded.obs.shape == (4, 9, SIZE, SIZE)
    assert (dataset.image_size, dataset.frame_stack, dataset.domain_name) == (SIZE, 3, "sim")
    assert (dataset.num_episodes, dataset.num_transitions, dataset.num_frames) == (EPISODES, len(dataset),
                                                                                  EPISODES * (STEPS + 1))


def test_streaming_reads_the_same_batches_as_the_cache(datasets):
    cached = RolloutDataset(datasets / "real", frame_stack=3, cache=True)
    streamed = RolloutDataset(datasets / "real", frame_stack=3, cache=False)
    assert cached.cached and not streamed.cached
    indices = np.random.default_rng(1).integers(0, len(cached), size=64)
    assert same_batch(cached.get_batch(indices), streamed.get_batch(indices))
    for a, b in zip(cached.episodes(), streamed.episodes(), strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
    # A streaming dataset with open HDF5 handles still pickles (DataLoader workers), and reopens its files.
    clone = pickle.loads(pickle.dumps(streamed))
    assert torch.equal(clone.get_batch(indices).obs, cached.get_batch(indices).obs)


def test_true_states_and_episodes_are_aligned_with_transitions(datasets):
    dataset = RolloutDataset(datasets / "sim")
    episodes = list(dataset.episodes())
    qpos, qvel = dataset.true_states(np.arange(len(dataset)))
    expected = np.concatenate([e.qpos[: STEPS - 1] for e in episodes])
    np.testing.assert_array_equal(qpos, expected)
    assert qvel.shape == qpos.shape == (len(dataset), 9)
    np.testing.assert_allclose(dataset.episode_returns(), [e.rewards.sum() for e in episodes])
    assert list(dataset.episode_ids) == list(range(EPISODES))


def test_shards_split_the_transitions_without_overlap(datasets):
    dataset = RolloutDataset(datasets / "sim")
    parts = [dataset.shard(rank, 3) for rank in range(3)]
    assert sum(len(p) for p in parts) == len(dataset)
    seen = np.concatenate([p.true_states(np.arange(len(p)))[0] for p in parts])
    everything = dataset.true_states(np.arange(len(dataset)))[0]
    assert sorted(map(tuple, seen)) == sorted(map(tuple, everything))
    with pytest.raises(ValueError, match="rank"):
        dataset.shard(3, 3)


def test_unpaired_sampler_draws_each_domain_independently(datasets):
    sim, real = RolloutDataset(datasets / "sim"), RolloutDataset(datasets / "real")
    # Same seed, same random policy: transition i has the same action in both datasets, so equal actions in
    # a drawn pair would mean equal indices. Independent draws agree only by chance (1 in len(sim)).
    np.testing.assert_array_equal(sim.get_batch([5]).action, real.get_batch([5]).action)
    pairs = UnpairedDataset(sim, real, batch_size=256, seed=0)
    sim_batch, real_batch = next(iter(pairs))
    same = (sim_batch.action == real_batch.action).all(dim=1).float().mean().item()
    assert same < 0.15, f"{same:.0%} of pairs share an index"
    sim_frames = {f.tobytes() for e in sim.episodes() for f in e.frames}
    real_frames = {f.tobytes() for e in real.episodes() for f in e.frames}
    newest = lambda batch: batch.obs[:, -3:].permute(0, 2, 3, 1).numpy()  # noqa: E731  (B, H, W, 3)
    assert all(f.tobytes() in sim_frames for f in newest(sim_batch))
    assert all(f.tobytes() in real_frames for f in newest(real_batch))
    a, b = pairs.sample(256, np.random.default_rng(3))
    assert (a.action == b.action).all(dim=1).float().mean().item() < 0.15
    loader = iter(DataLoader(pairs, batch_size=None))
    first, second = next(loader), next(loader)
    assert not torch.equal(first[0].obs, second[0].obs)


def test_unpaired_rejects_one_domain_twice_and_mismatched_sizes(datasets, tmp_path):
    sim = RolloutDataset(datasets / "sim")
    with pytest.raises(ValueError, match="both come from domain 'sim'"):
        UnpairedDataset(sim, RolloutDataset(datasets / "sim"))
    with pytest.raises(ValueError, match="same frame_stack"):
        UnpairedDataset(sim, RolloutDataset(datasets / "real", frame_stack=2))
    write_images(tmp_path / "folders", "trainB", count=2, size=(20, 20))
    bigger = ImageFolderDataset(tmp_path / "folders", "train", "B", image_size=2 * SIZE)
    with pytest.raises(ValueError, match=f"{SIZE}x{SIZE} frames but real data"):
        UnpairedDataset(RolloutDataset(datasets / "sim", frame_stack=1), bigger)
    with pytest.raises(ValueError, match="expects 64x64") as err:
        check_image_size(sim, 64)
    assert "\n" not in str(err.value)
    check_image_size(sim, SIZE)


def write_images(folder, name: str, count: int, size: tuple[int, int]) -> None:
    """Pictures blue at the border and red in the middle, ``size`` = (width, height)."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    width, height = size
    for i in range(count):
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        pixels[..., 2] = 255
        pixels[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = (255, 0, 0)
        Image.fromarray(pixels).save(folder / name / f"{i:03d}.png")


def test_image_folders_resize_crop_and_sample(tmp_path):
    write_images(tmp_path, "trainA", count=3, size=(48, 24))  # wide: the sides get cropped
    write_images(tmp_path, "trainB", count=2, size=(10, 10))  # small: upscaled
    a = ImageFolderDataset(tmp_path, "train", "A", image_size=SIZE)
    b = ImageFolderDataset(tmp_path, "train", "B", image_size=SIZE)
    assert (len(a), len(b), a.frame_stack, a.has_transitions) == (3, 2, 1, False)
    image = a[0].obs
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8
    assert image[:, SIZE // 2, SIZE // 2].tolist() == [255, 0, 0]  # the centre survives the crop
    assert image[:, 0, SIZE // 2].tolist()[2] > 200  # the top border is still blue
    batch = a.sample(4, np.random.default_rng(0))
    assert batch.obs.shape == (4, 3, SIZE, SIZE) and not batch.has_transitions and batch.next_obs is None
    collated = next(iter(DataLoader(a, batch_size=2, collate_fn=collate_transitions)))
    assert collated.obs.shape == (2, 3, SIZE, SIZE) and collated.action is None
    sim_batch, real_batch = UnpairedDataset(a, b).sample(3, np.random.default_rng(0))
    assert sim_batch.obs.shape == real_batch.obs.shape == (3, 3, SIZE, SIZE)
    with pytest.raises(FileNotFoundError, match="testA"):
        ImageFolderDataset(tmp_path, "test", "A")
    (tmp_path / "testB").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        ImageFolderDataset(tmp_path, "test", "B")
    (tmp_path / "testB" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png is not a readable image"):
        ImageFolderDataset(tmp_path, "test", "B")


def copy_dataset(datasets, tmp_path, name: str = "sim"):
    target = tmp_path / name
    shutil.copytree(datasets / name, target)
    return target


def test_missing_empty_and_corrupt_datasets_give_one_line_errors(datasets, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        RolloutDataset(tmp_path / "missing")
    empty = copy_dataset(datasets, tmp_path, "sim")
    for shard in list_shards(empty).values():
        shard.unlink()
    with pytest.raises(ValueError, match="holds no complete episodes"):
        RolloutDataset(empty)

    broken = copy_dataset(datasets, tmp_path, "real")
    shard = list_shards(broken)[1]
    original = shard.read_bytes()
    shard.write_bytes(original[: len(original) // 2])
    for cache in (True, False):
        with pytest.raises(ValueError, match="episode_000001.h5 is corrupt") as err:
            RolloutDataset(broken, cache=cache)
        assert "\n" not in str(err.value)
    assert shard.read_bytes() == original[: len(original) // 2]  # reading never deletes or rewrites

    shard.write_bytes(original)
    metadata = json.loads((broken / "metadata.json").read_text())
    metadata["collection"]["image_size"] = 2 * SIZE
    (broken / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="another dataset"):
        RolloutDataset(broken)
