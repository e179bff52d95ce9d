"""Generator and discriminator shapes, init, train/eval equality, frame stacking, and loading a translator."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from rlcyclegan.networks import (
    GENERATOR_FILES,
    LATEST_FILE,
    TRANSLATOR_FILE,
    DiscriminatorSpec,
    GeneratorSpec,
    InstanceNorm,
    PatchDiscriminator,
    ResnetGenerator,
    check_image_size,
    frames_to_stack,
    load_generator,
    patch_output_size,
    reference_instance_norm,
    stack_to_frames,
    translator_metadata,
)


def test_generator_maps_frames_to_frames_in_tanh_range():
    g = ResnetGenerator(ngf=8, n_blocks=2)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    out = g(x)
    assert out.shape == x.shape and out.abs().max() < 1
    with pytest.raises(ValueError, match="multiples of 4"):
        g(torch.zeros(1, 3, 30, 30))


def test_weights_start_from_normal_0_002_with_zero_bias():
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=16, n_blocks=2)
    weights = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(m.bias.abs().sum() == 0 for m in g.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("make", [lambda: ResnetGenerator(ngf=8, n_blocks=2), lambda: PatchDiscriminator(ndf=8)])
def test_outputs_equal_in_train_and_eval_mode(make):
    """Instance norm keeps no running statistics, so eval() changes nothing (junyanz #395)."""
    net = make()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    net.train()
    train_out = net(x)
    net(torch.rand(2, 3, 32, 32))  # a second batch would move running statistics, if there were any
    net.eval()
    assert torch.equal(net(x), train_out)
    assert not list(net.buffers())


@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_instance_norm_equals_torch_instance_norm(channels_last):
    x = torch.randn(4, 8, 16, 16) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(InstanceNorm(8)(x), nn.InstanceNorm2d(8)(x), rtol=1e-5, atol=1e-5)


def test_generators_with_either_norm_compute_the_same_function():
    fast, reference = ResnetGenerator(ngf=8, n_blocks=2), ResnetGenerator(ngf=8, n_blocks=2, norm=reference_instance_norm)
    reference.load_state_dict(fast.state_dict())  # the norms have no parameters: the same weights fit both
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size,layers", [(64, 3), (32, 3), (16, 2), (70, 3)])
def test_patch_output_size_matches_the_network(size, layers):
    d = PatchDiscriminator(ndf=4, n_layers=layers)
    out = d(torch.zeros(1, 3, size, size))
    assert out.shape == (1, 1, patch_output_size(size, layers), patch_output_size(size, layers))


def test_image_size_checks_are_one_line_errors():
    check_image_size(32, GeneratorSpec(), DiscriminatorSpec(n_layers=3))
    with pytest.raises(ValueError, match=r"too small for a PatchGAN with n_layers=3 \(needs >= 24\)") as err:
        check_image_size(16, GeneratorSpec(), DiscriminatorSpec(n_layers=3))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="multiple of 4"):
        check_image_size(30, GeneratorSpec(), DiscriminatorSpec())


def test_stacks_split_into_frames_oldest_first_and_back():
    stacks = torch.arange(2 * 9 * 2 * 2, dtype=torch.float32).reshape(2, 9, 2, 2)  # (B=2, 3k=9, H, W)
    frames = stack_to_frames(stacks)
    assert frames.shape == (6, 3, 2, 2)
    assert torch.equal(frames[1], stacks[0, 3:6]) and torch.equal(frames[5], stacks[1, 6:9])
    assert torch.equal(frames_to_stack(frames, 3), stacks)


def _write_translator(directory, g_sim2real, g_real2sim, image_size=32):
    directory.mkdir(parents=True)
    for direction, g in (("sim2real", g_sim2real), ("real2sim", g_real2sim)):
        save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(directory / GENERATOR_FILES[direction]))
    meta = translator_metadata(g_sim2real.spec, image_size, frame_stack=3)
    (directory / TRANSLATOR_FILE).write_text(json.dumps(meta))


def test_load_generator_rebuilds_each_direction_in_eval_mode(tmp_path):
    g, f = ResnetGenerator(ngf=8, n_blocks=1), ResnetGenerator(ngf=8, n_blocks=1)
    _write_translator(tmp_path / "run" / "checkpoints" / "step_00000010", g, f)
    (tmp_path / "run" / "checkpoints" / LATEST_FILE).write_text("step_00000010\n")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for where in (tmp_path / "run", tmp_path / "run" / "checkpoints" / "step_00000010"):
        loaded = load_generator(where, "real2sim", "cpu")
        assert not loaded.training
        torch.testing.assert_close(loaded(x), f(x))
    torch.testing.assert_close(load_generator(tmp_path / "run", "sim2real")(x), g(x))
    with pytest.raises(ValueError, match="direction"):
        load_generator(tmp_path / "run", "sideways")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no translator checkpoint"):
        load_generator(tmp_path, "real2sim")


def test_load_generator_rejects_weights_of_another_architecture(tmp_path):
    _write_translator(tmp_path / "ckpt", ResnetGenerator(ngf=8, n_blocks=1), ResnetGenerator(ngf=8, n_blocks=1))
    meta = json.loads((tmp_path / "ckpt" / TRANSLATOR_FILE).read_text())
    meta["generator_kwargs"]["ngf"] = 16
    (tmp_path / "ckpt" / TRANSLATOR_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="different ResnetGenerator architecture") as err:
        load_generator(tmp_path / "ckpt", "real2sim")
    assert "\n" not in str(err.value)
