"""The training step: update order and gradient isolation, the detached cycle, the RL-scene/Q decision, configs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import rlcyclegan.trainer as trainer_module
from rlcyclegan.config import ConfigError, load_config
from rlcyclegan.data.collect import CollectConfig, collect
from rlcyclegan.data.loaders import RolloutDataset
from rlcyclegan.losses import cycle_loss, rl_scene_loss
from rlcyclegan.networks import ResnetGenerator
from rlcyclegan.train_config import LossConfig, TrainConfig
from rlcyclegan.trainer import ConstantThenLinear, CycleTranslator, RLCycleGANTrainer

SIZE, STACK, BATCH = 32, 2, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollouts")
    for domain in ("sim", "real"):
        collect(CollectConfig(out=root / domain, domain=domain, episodes=2, workers=1, image_size=SIZE,
                              max_steps=20, seed=3), progress=False)
    return RolloutDataset(root / "sim", STACK), RolloutDataset(root / "real", STACK)


def tiny(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, [
        "data.sim=unused", "data.real=unused", f"data.image_size={SIZE}", f"data.frame_stack={STACK}",
        "model.ngf=4", "model.n_blocks=1", "model.ndf=4", "q.features_dim=8", "q.hidden_dim=8", "q.width=4",
        "iterations=10", *overrides,
    ])


def make_trainer(config: TrainConfig, seed: int = 0) -> RLCycleGANTrainer:
    torch.manual_seed(seed)
    return RLCycleGANTrainer(config, SIZE, STACK, 6, torch.device("cpu"))


def batches(data, i: int):
    rng = np.random.default_rng(i)
    return data[0].sample(BATCH, rng), data[1].sample(BATCH, rng)


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_step_returns_float_scalars_under_the_tag_namespaces(data):
    metrics = make_trainer(tiny()).step(*batches(data, 0))
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
    assert {k.split("/")[0] for k in metrics} == {"losses", "gan", "q", "charts"}
    for key in ("losses/gan_sim2real", "losses/cycle_forward", "losses/identity_real2sim", "losses/rl_scene",
                "losses/D_real", "losses/td_sim", "losses/td_real", "q/gap_sim2real", "gan/D_sim_on_fake",
                "charts/lr_generators", "charts/lr_critics"):
        assert key in metrics


@pytest.mark.parametrize("freeze", [True, False])
def test_generator_step_leaves_no_gradient_in_discriminators_or_critics(data, monkeypatch, freeze):
    """At the moment G and F step, D and Q must hold exactly the gradients of their own last step.

    With freezing disabled (the known pitfall) the check must catch the leak: the test can fail.
    """
    if not freeze:
        monkeypatch.setattr(trainer_module, "set_requires_grad", lambda modules, flag: None)
    trainer = make_trainer(tiny())
    trainer.step(*batches(data, 0))  # D and Q now hold gradients from their own updates
    frozen = {name: net for name, net in (("D", trainer.discriminators), ("Q", trainer.critics))}
    grads_before = {name: [p.grad.clone() for p in net.parameters()] for name, net in frozen.items()}
    weights_before = {name: params(net) for name, net in frozen.items()}
    seen: dict[str, bool] = {}
    original_step = trainer.opt_G.step

    def checked_step(*args, **kwargs):
        for name, net in frozen.items():
            grads_now = [p.grad for p in net.parameters()]
            seen[name] = same(grads_now, grads_before[name]) and same(params(net), weights_before[name])
        return original_step(*args, **kwargs)

    monkeypatch.setattr(trainer.opt_G, "step", checked_step)
    trainer.step(*batches(data, 1))
    assert seen == ({"D": True, "Q": True} if freeze else {"D": False, "Q": False})


def test_each_optimizer_owns_a_disjoint_parameter_set(data):
    trainer = make_trainer(tiny())
    groups = [{id(p) for g in opt.param_groups for p in g["params"]} for opt in trainer.optimizers().values()]
    assert len(groups) == 3 and all(not (a & b) for i, a in enumerate(groups) for b in groups[i + 1:])
    every = {id(p) for net in trainer.networks().values() for p in net.parameters() if p.requires_grad}
    assert set().union(*groups) == every  # every trainable parameter has exactly one optimizer


def _grad_norms(g: nn.Module, f: nn.Module, loss: torch.Tensor) -> tuple[float, float]:
    g.zero_grad(set_to_none=True)
    f.zero_grad(set_to_none=True)
    loss.backward()
    norm = lambda m: sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None)  # noqa: E731
    return norm(g), norm(f)


@pytest.mark.parametrize("mode", ["full", "detached"])
def test_detached_cycle_stops_gradient_into_the_first_generator_only(mode):
    torch.manual_seed(0)
    g, f = ResnetGenerator(ngf=4, n_blocks=1), ResnetGenerator(ngf=4, n_blocks=1)
    translator = CycleTranslator(g, f, identity=True, reconstruct=True, detach_cycle=mode == "detached")
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1

    g_fwd, f_fwd = _grad_norms(g, f, cycle_loss(x, translator(x, y).rec_x))  # ||F(G(x)) - x||
    g_bwd, f_bwd = _grad_norms(g, f, cycle_loss(y, translator(x, y).rec_y))  # ||G(F(y)) - y||
    assert f_fwd > 0 and g_bwd > 0  # the second generator of each cycle always learns from it
    if mode == "detached":
        assert g_fwd == 0 and f_bwd == 0  # ... the first one never does
    else:
        assert g_fwd > 0 and f_bwd > 0
    # Only there: the translations themselves still carry gradient to their generator.
    assert _grad_norms(g, f, translator(x, y).fake_y.square().mean())[0] > 0
    assert _grad_norms(g, f, translator(x, y).fake_x.square().mean())[1] > 0
    assert _grad_norms(g, f, translator(x, y).idt_y.square().mean())[0] > 0


def test_detached_mode_reaches_the_trainer(data):
    trainer = make_trainer(tiny("loss.cycle_mode=detached"))
    assert trainer.translator.detach_cycle and not make_trainer(tiny()).translator.detach_cycle


@pytest.mark.parametrize("trains_q", [True, False])
def test_rl_scene_loss_trains_the_q_networks_only_when_switched_on(data, trains_q):
    """Decision (LossConfig.rl_scene_trains_q, default on as in the paper): the Q step may descend the RL-scene
    loss on the generator step's detached images; off, Q-networks see the TD loss alone."""
    config = tiny("loss.lambda_rl=0", f"loss.rl_scene_trains_q={str(trains_q).lower()}")
    trainer = make_trainer(config)
    before = params(trainer.critics)
    trainer.step(*batches(data, 0))
    assert same(params(trainer.critics), before) is not trains_q

    # With the TD loss on too, the switch changes the Q update (the scene term is really in it).
    after = []
    for flag in ("true", "false"):
        t = make_trainer(tiny(f"loss.rl_scene_trains_q={flag}"))
        t.step(*batches(data, 0))
        after.append(params(t.critics))
    assert not same(*after)


def test_extra_frames_reach_the_image_losses_and_not_the_rl_scene_loss(data):
    sim, real = batches(data, 0)
    rng = np.random.default_rng(9)
    extra_sim, extra_real = (source.sample(3, rng).obs[:, -3:].contiguous() for source in data)
    plain = make_trainer(tiny()).step(sim, real)
    extra = make_trainer(tiny()).step(sim._replace(extra_frames=extra_sim), real._replace(extra_frames=extra_real))
    assert extra["losses/rl_scene"] == pytest.approx(plain["losses/rl_scene"], rel=1e-6)
    assert extra["q/sim"] == pytest.approx(plain["q/sim"], rel=1e-6)
    for image_loss in ("losses/gan_sim2real", "losses/cycle_forward", "losses/identity_sim2real", "losses/D_real"):
        assert extra[image_loss] != pytest.approx(plain[image_loss], rel=1e-6)


def test_prefetcher_adds_the_newest_frame_of_other_states_per_domain(data):
    from rlcyclegan.train_loop import Prefetcher, batch_rng

    sim, real = Prefetcher(*data, BATCH, seed=4, rank=0, start=0, stop=1, depth=0, pin_memory=False,
                           extra_frames=3).sample(0)
    rng = batch_rng(4, 0, 0)
    for source in data:  # the stacks first, then the extra states, from one random stream
        source.sample(BATCH, rng)
    for batch in (sim, real):
        assert batch.obs.shape == (BATCH, 3 * STACK, SIZE, SIZE)
        assert batch.extra_frames is not None and batch.extra_frames.shape == (3, 3, SIZE, SIZE)
    expected = [source.sample(3, rng).obs[:, -3:] for source in data]
    torch.testing.assert_close(sim.extra_frames, expected[0])
    torch.testing.assert_close(real.extra_frames, expected[1])


def test_rl_scene_loss_is_zero_for_identity_generators_and_one_q_network(data):
    trainer = make_trainer(tiny())
    trainer.translator.G_sim2real = trainer.translator.G_real2sim = nn.Identity()
    trainer.critics.Q_real = trainer.critics.Q_sim
    sim, real = batches(data, 0)
    x_s, y_s = (trainer_module.frames_to_float(b.obs) for b in (sim, real))
    t = trainer.translator(trainer._frames(x_s), trainer._frames(y_s))
    q = trainer._scene_q(trainer.critics, x_s, y_s, t, sim.action, real.action, detach=False)
    assert rl_scene_loss(*q).item() == pytest.approx(0.0, abs=1e-10)
    assert rl_scene_loss(*q._replace(q_x_translated=q.q_x_translated + 1)).item() > 0


def test_rl_scene_loss_measures_q_values_in_units_of_the_q_scale(data, tmp_path):
    from rlcyclegan.agents.q_network import PixelQNetwork, save_q

    for domain, scale in (("sim", 30.0), ("real", 10.0)):
        save_q(PixelQNetwork(STACK, 6, SIZE, 8, 8, 4, value_scale=scale), tmp_path / f"{domain}.safetensors")
    inits = (f"q.init_sim={tmp_path / 'sim.safetensors'}", f"q.init_real={tmp_path / 'real.safetensors'}")
    q = trainer_module.SceneQ(*(torch.tensor([float(v)]) for v in (0, 4, 0, 0, 0, 0)))  # one gap of 4
    assert make_trainer(tiny(*inits)).scene_q_scale == 20.0  # the mean of the two value scales
    assert make_trainer(tiny(*inits))._scene_loss(q).item() == pytest.approx(2 * (4 / 20) ** 2)
    assert make_trainer(tiny(*inits, "loss.rl_scene_q_scale=2"))._scene_loss(q).item() == pytest.approx(2 * 2.0**2)
    assert make_trainer(tiny()).scene_q_scale == 1.0  # fresh Q-networks: raw values


def test_plain_cyclegan_builds_no_q_networks(data):
    trainer = make_trainer(tiny("loss.lambda_rl=0", "loss.lambda_rl_scene=0"))
    assert trainer.critics is None and trainer.opt_Q is None
    assert set(trainer.networks()) == {"G_sim2real", "G_real2sim", "D_real", "D_sim"}
    metrics = trainer.step(*batches(data, 0))
    assert not any(k.startswith("q/") for k in metrics)


def test_ablation_switches_resolve_to_weights():
    base = LossConfig()
    assert base.resolved() == base
    gan_only = LossConfig(ablations=("gan_only",)).resolved()
    assert not gan_only.cycle_on and not gan_only.identity_on and gan_only.lambda_gan == 1
    assert LossConfig(ablations=("cycle_only",)).resolved().lambda_gan == 0
    forward = LossConfig(ablations=("forward_cycle_only", "no_identity")).resolved()
    assert forward.forward_cycle and not forward.backward_cycle and not forward.identity_on
    assert not LossConfig(ablations=("no_rl_scene", "no_rl")).resolved().uses_q
    with pytest.raises(ConfigError, match="unknown ablation"):
        LossConfig(ablations=("no_gan",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be one of"):
        tiny("loss.ablations=[no_gan]")


def test_configs_where_a_generator_learns_nothing_are_rejected():
    with pytest.raises(ConfigError, match="G_sim2real receives no gradient"):
        tiny("loss.lambda_gan=0", "loss.lambda_identity=0", "loss.lambda_rl_scene=0", "loss.cycle_mode=detached",
             "loss.backward_cycle=false")
    tiny("loss.lambda_gan=0", "loss.lambda_identity=0", "loss.lambda_rl_scene=0", "loss.cycle_mode=full",
         "loss.backward_cycle=false")  # the full forward cycle reaches both


def test_learning_rate_is_constant_then_decays_linearly_to_zero(data):
    schedule = ConstantThenLinear(total=10, constant=5)
    assert [schedule(i) for i in (0, 4, 5, 6, 8, 10)] == [1.0, 1.0, 1.0, 0.8, 0.4, 0.0]
    trainer = make_trainer(tiny("iterations=4", "loss.lambda_rl_scene=0", "loss.lambda_rl=0"))
    lrs = [trainer.step(*batches(data, i))["charts/lr_generators"] for i in range(4)]
    assert lrs == pytest.approx([2e-4, 2e-4, 1e-4, 0.0])  # lr for the next iteration, after each step


def test_optimizer_settings_follow_cyclegan():
    trainer = make_trainer(tiny())
    group = trainer.opt_G.param_groups[0]
    assert group["lr"] == 2e-4 and group["betas"] == (0.5, 0.999)
    assert trainer.opt_D.param_groups[0]["betas"] == (0.5, 0.999)
    assert trainer.pool_real.size == trainer.pool_sim.size == 50


def test_a_rate_written_with_a_dotless_exponent_is_a_number():
    assert load_config(TrainConfig, None, ["optim.lr=1e-4"]).optim.lr == 1e-4  # YAML 1.1 reads "1e-4" as a string
    with pytest.raises(ConfigError, match="optim.lr must be a number, got 'fast'"):
        load_config(TrainConfig, None, ["optim.lr=fast"])


def test_architecture_fields_cover_the_networks():
    from rlcyclegan.train_config import architecture

    a, b = tiny(), tiny("model.ngf=8")
    assert architecture(a) != architecture(b)
    assert architecture(a) == architecture(dataclasses.replace(a, iterations=99))
    assert architecture(a) != architecture(tiny("optim.ema_decay=0.999"))  # the averages have files of their own


def test_averaged_generators_are_the_bias_corrected_average_of_the_iterates(data):
    trainer = make_trainer(tiny("optim.ema_decay=0.75"))
    assert set(trainer.averaged_generators) == {"G_sim2real_ema", "G_real2sim_ema"}
    assert set(trainer.averaged_generators) <= set(trainer.networks())  # checkpoints hold them
    averaged = {name: params(net) for name, net in trainer.averaged_generators.items()}
    assert same(averaged["G_real2sim_ema"], params(trainer.G_real2sim))  # they start at the initial weights
    # Update n moves (1 - 0.75) / (1 - 0.75 ** n) of the way: all of it first (nothing of the initial weights
    # is kept), then 0.25 / 0.4375 = 4/7: the average is 3/7 of the first iterate and 4/7 of the second.
    for i, weight in enumerate([1.0, 4 / 7]):
        trainer.step(*batches(data, i))
        for name, net in trainer.averaged_generators.items():
            trained = params(getattr(trainer, name.removesuffix("_ema")))
            expected = [(1 - weight) * a + weight * p for a, p in zip(averaged[name], trained, strict=True)]
            assert all(torch.allclose(e, a) for e, a in zip(expected, params(net), strict=True))
            assert same(params(net), trained) == (weight == 1.0)
            averaged[name] = params(net)
            assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    assert make_trainer(tiny()).averaged_generators == {}
    with pytest.raises(ConfigError, match="optim.ema_decay must lie in"):
        tiny("optim.ema_decay=1")
