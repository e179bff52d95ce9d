"""The image pool: fill first, then swap with probability 1/2, seeded by an explicit generator, checkpointable."""

from __future__ import annotations

import pytest
import torch

from rlcyclegan.image_pool import ImagePool


def images(start: int, count: int) -> torch.Tensor:
    """``count`` 1x1 single-channel images whose value is their id: ``(count, 1, 1, 1)``."""
    return torch.arange(start, start + count, dtype=torch.float32).reshape(count, 1, 1, 1)


def ids(batch: torch.Tensor) -> list[int]:
    return [int(v) for v in batch.flatten()]


def test_returns_its_input_until_full():
    pool = ImagePool(5, torch.Generator().manual_seed(0))
    assert ids(pool.query(images(0, 3))) == [0, 1, 2]
    assert ids(pool.query(images(3, 2))) == [3, 4]
    assert len(pool) == 5
    assert sorted(ids(pool.images)) == [0, 1, 2, 3, 4]


def test_when_full_swaps_about_half_for_stored_images():
    pool = ImagePool(10, torch.Generator().manual_seed(0))
    pool.query(images(0, 10))
    swapped = 0
    for i in range(200):
        new_id = 100 + i
        stored_before = set(ids(pool.images))
        out = ids(pool.query(images(new_id, 1)))[0]
        stored_after = set(ids(pool.images))
        if out == new_id:  # returned as is: the pool is unchanged
            assert stored_after == stored_before
        else:  # a stored image came back and the new one took its slot
            swapped += 1
            assert out in stored_before and out not in stored_after
            assert stored_after == (stored_before - {out}) | {new_id}
        assert len(pool) == 10
    assert 70 < swapped < 130  # p = 1/2 over 200 draws


def test_same_generator_seed_same_answers_and_other_seeds_differ():
    def run(seed: int) -> list[int]:
        pool = ImagePool(4, torch.Generator().manual_seed(seed))
        return [v for i in range(20) for v in ids(pool.query(images(10 * i, 3)))]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_query_draws_nothing_from_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    pool = ImagePool(2, torch.Generator().manual_seed(0))
    for i in range(5):
        pool.query(images(i * 2, 2))
    assert torch.equal(torch.rand(1), expected)


def test_size_zero_is_a_passthrough_and_outputs_are_detached():
    fakes = images(0, 3).requires_grad_(True)
    assert ids(ImagePool(0, torch.Generator()).query(fakes)) == [0, 1, 2]
    out = ImagePool(2, torch.Generator()).query(fakes * 2)
    assert not out.requires_grad
    with pytest.raises(ValueError, match=">= 0"):
        ImagePool(-1, torch.Generator())


def test_state_dict_round_trip_continues_identically():
    pool = ImagePool(6, torch.Generator().manual_seed(5))
    for i in range(4):
        pool.query(images(10 * i, 3))
    state = pool.state_dict()
    restored = ImagePool(6, torch.Generator().manual_seed(999))
    restored.load_state_dict(state)
    for i in range(4, 10):
        assert ids(pool.query(images(10 * i, 3))) == ids(restored.query(images(10 * i, 3)))
    with pytest.raises(ValueError, match="size is 2"):
        ImagePool(2, torch.Generator()).load_state_dict(state)
