"""The privileged teacher: a stable-baselines3 agent on the ``sim`` domain's true state.

The teacher sees the 17-dim HalfCheetah state (no rendering, thousands of steps per second), so it learns
in minutes on a CPU; the pixel student then imitates it (``agents/dagger.py``). PPO is the default: SB3
SAC runs ~75 env steps/s on the 2-core CPU, so the ~100k+ steps it needs for 4,000 do not fit the 60-minute
budget, while PPO with the rl-zoo HalfCheetah hyperparameters ran 240-400 steps/s (CPU shared with other
jobs). Measured deterministic returns (seed 0, 3 episodes per point):

- plain PPO: 2,372 at 50k steps, 3,376 at 100k, 4,181 at 150k, 4,980 at 200k, 5,420 at 300k (12.5 min); but
  under action noise of std 0.1 it got stuck nose-up in 3 of 6 episodes, and its DAgger student reached
  only 37% of its return, stuck the same way (the teacher's labels in that trap keep it there);
- PPO trained under action noise of std 0.15 (``ActionNoise``, the default): 1,885 at 50k, 3,571 at 150k,
  4,327 at 250k, 4,872 at 400k (24.6 min); over 10 episodes 4,879 clean and 4,377 under noise of std 0.1.
  Its student reached 91% of its return.

Files: the model is saved with SB3's own ``save`` (``teacher.zip``, loadable with ``PPO.load``/``SAC.load``).
PPO trains on normalized observations (``VecNormalize``); those running statistics are not part of the SB3
zip, so they are written next to it as JSON (``teacher.obs_norm.json``: mean, var, clip, epsilon) and
applied by :class:`Teacher`. No pickle is involved.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from rlcyclegan.agents.policies import sb3_algorithm_class, sb3_observation_shape

TeacherAlgo = Literal["ppo", "sac", "td3"]

# Per-algorithm defaults; ``TeacherConfig.algo_kwargs`` overrides any of them. PPO: the tuned rl-zoo
# HalfCheetah hyperparameters (rl-baselines3-zoo ``hyperparams/ppo.yml``). SAC/TD3: SB3's settings with
# updates batched every 8 env steps (same update ratio, less Python overhead); slow on a CPU.
ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {
        "n_steps": 512, "batch_size": 64, "gamma": 0.98, "learning_rate": 2.0633e-05, "ent_coef": 0.000401762,
        "clip_range": 0.1, "n_epochs": 20, "gae_lambda": 0.92, "max_grad_norm": 0.8, "vf_coef": 0.58096,
        "policy_kwargs": {"log_std_init": -2.0, "ortho_init": False, "activation_fn": "relu",
                          "net_arch": {"pi": [256, 256], "vf": [256, 256]}},
    },
    "sac": {"learning_starts": 10_000, "train_freq": 8, "gradient_steps": 8, "batch_size": 256},
    "td3": {"learning_starts": 10_000, "train_freq": 8, "gradient_steps": 8, "batch_size": 256},
}
_ON_POLICY = {"ppo"}
STATE_SHAPE = (17,)
"""HalfCheetah's state observation: qpos without the root x (8) and qvel (9)."""


@dataclass
class TeacherConfig:
    """How the state-based teacher is trained."""

    algo: TeacherAlgo = "ppo"
    """SB3 algorithm; PPO is the fast one on a CPU."""
    total_timesteps: int = 1_000_000
    """Environment steps of training."""
    normalize: bool = True
    """Normalize observations and rewards with ``VecNormalize`` (rl-zoo does for PPO on MuJoCo)."""
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    """Overrides of ``ALGO_DEFAULTS[algo]`` (e.g. ``teacher.algo_kwargs.learning_rate=1e-4``)."""
    eval_every: int = 100_000
    """Env steps between deterministic evaluations logged as ``eval/teacher_return``."""
    eval_episodes: int = 3
    """Episodes per intermediate evaluation."""
    max_episode_steps: int = 1000
    """Episode length (HalfCheetah's standard 1000)."""
    action_noise: float = 0.15
    """Std of Gaussian noise added to executed actions during training only (``ActionNoise``): robustness."""
    robustness_noise: float = 0.1
    """Intermediate evaluations also report the return under action noise of this std (0: skip)."""

    def __post_init__(self) -> None:
        if self.action_noise < 0 or self.robustness_noise < 0:
            raise ValueError("teacher.action_noise and teacher.robustness_noise must be >= 0")
        if self.total_timesteps <= 0:
            raise ValueError(f"teacher.total_timesteps must be positive, got {self.total_timesteps}")
        if self.eval_every <= 0 or self.eval_episodes <= 0:
            raise ValueError("teacher.eval_every and teacher.eval_episodes must be positive")


def state_observation(env: gym.Env) -> np.ndarray:
    """The 17-dim true state of a pixel env's current step, for labelling by the privileged teacher.

    DAgger needs the teacher's action for exactly the state the student visits; reading it from the same
    env avoids stepping a second, drifting copy. Only the teacher may read it: a pixel learner must not.
    """
    return env.unwrapped._get_obs().astype(np.float32)


@dataclass
class ObsNormalizer:
    """Fixed ``VecNormalize`` observation statistics: ``clip((x - mean) / sqrt(var + eps), -clip, clip)``."""

    mean: np.ndarray
    var: np.ndarray
    clip: float = 10.0
    epsilon: float = 1e-8

    def __call__(self, states: np.ndarray) -> np.ndarray:
        scaled = (states - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def to_json(self, path: Path) -> None:
        path.write_text(json.dumps({"mean": self.mean.tolist(), "var": self.var.tolist(),
                                    "clip": self.clip, "epsilon": self.epsilon}))

    @classmethod
    def from_json(cls, path: Path) -> ObsNormalizer:
        data = json.loads(path.read_text())
        return cls(np.asarray(data["mean"]), np.asarray(data["var"]), float(data["clip"]), float(data["epsilon"]))


def normalizer_path(model_path: str | Path) -> Path:
    """``teacher.zip`` -> ``teacher.obs_norm.json``."""
    path = Path(model_path)
    return path.with_name(path.stem + ".obs_norm.json")


class Teacher:
    """A loaded SB3 state policy plus its observation normalization: ``act(states) -> actions``."""

    def __init__(self, model: Any, normalizer: ObsNormalizer | None = None) -> None:
        self.model = model
        self.normalizer = normalizer

    def act(self, states: np.ndarray) -> np.ndarray:
        """Deterministic actions for raw states ``(17,)`` or ``(N, 17)``."""
        obs = self.normalizer(states) if self.normalizer is not None else states
        actions, _ = self.model.predict(obs, deterministic=True)
        return actions

    def save(self, path: str | Path) -> None:
        """``path`` (SB3 zip) and, when normalized, the statistics JSON beside it."""
        path = Path(path)
        self.model.save(path)
        if self.normalizer is not None:
            self.normalizer.to_json(normalizer_path(path))


def is_state_model(path: str | Path) -> bool:
    """Whether ``path`` is an SB3 zip over the 17-dim HalfCheetah state (a teacher), without loading it."""
    return zipfile.is_zipfile(path) and sb3_observation_shape(path) == STATE_SHAPE


def load_teacher(path: str | Path, device: str = "auto") -> Teacher:
    """Load a teacher zip (any SB3 algorithm) and its normalization statistics if present.

    Raises:
        FileNotFoundError: if there is no teacher at ``path`` (train one with ``rlcyclegan train-policy``).
        ValueError: if the file is not an SB3 model over the 17-dim HalfCheetah state.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no teacher at {path}: train one with `rlcyclegan train-policy` or pass --teacher")
    model = sb3_algorithm_class(path).load(path, device=device)
    shape = tuple(model.observation_space.shape)
    if shape != STATE_SHAPE:
        raise ValueError(f"teacher {path} observes shape {shape}, but the teacher must see the 17-dim HalfCheetah state")
    norm_file = normalizer_path(path)
    return Teacher(model, ObsNormalizer.from_json(norm_file) if norm_file.is_file() else None)


class ActionNoise(gym.ActionWrapper):
    """Adds Gaussian noise of std ``sigma`` to every action, then clips to the action bounds.

    Training the teacher under these perturbations makes it recover from states off its own path. The
    student's imitation error acts like such noise; a teacher trained without it (300k PPO steps, return
    5,300) got stuck nose-up in 3 of 6 episodes under noise of std 0.1, and a DAgger student inherits that
    trap, because the teacher's labels in the trap keep it there.
    """

    def __init__(self, env: gym.Env, sigma: float, seed: int | None = None) -> None:
        super().__init__(env)
        if sigma < 0:
            raise ValueError(f"action noise sigma must be >= 0, got {sigma}")
        self.sigma = sigma
        self.rng = np.random.default_rng(seed)

    def action(self, action: np.ndarray) -> np.ndarray:
        noisy = action + self.sigma * self.rng.standard_normal(np.shape(action))
        return np.clip(noisy, self.action_space.low, self.action_space.high).astype(np.float32)


def evaluate_teacher(teacher: Teacher, domain: str, episodes: int, seed: int, max_episode_steps: int = 1000,
                     action_noise: float = 0.0, on_episode_end: Callable[[gym.Env], None] | None = None
                     ) -> np.ndarray:
    """Undiscounted returns of ``episodes`` deterministic episodes on the state observations of ``domain``.

    ``action_noise > 0`` measures robustness instead: the executed actions are perturbed (``ActionNoise``).
    ``on_episode_end`` gets the env after each episode, before the next reset, to read where it ended.
    """
    from rlcyclegan.envs import make_env

    env = make_env(domain, obs_type="state", max_episode_steps=max_episode_steps)
    if action_noise > 0:
        env = ActionNoise(env, action_noise, seed)
    returns = np.zeros(episodes)
    for i in range(episodes):
        state, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            state, reward, terminated, truncated, _ = env.step(teacher.act(state))
            returns[i] += reward
            done = terminated or truncated
        if on_episode_end is not None:
            on_episode_end(env)
    env.close()
    return returns


def _policy_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    """YAML-friendly policy kwargs -> SB3's (activation names become torch classes)."""
    from torch import nn

    activations = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}
    kwargs = dict(raw)
    if isinstance(kwargs.get("activation_fn"), str):
        name = kwargs["activation_fn"]
        if name not in activations:
            raise ValueError(f"policy_kwargs.activation_fn must be one of {', '.join(activations)}; got {name!r}")
        kwargs["activation_fn"] = activations[name]
    return kwargs


def train_teacher(
    config: TeacherConfig,
    domain: str,
    seed: int,
    device: str,
    log_dir: Path | None = None,
    on_eval: Callable[[int, float, float], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Teacher:
    """Train an SB3 agent on the state observations of ``domain``.

    Args:
        config: algorithm and budget.
        domain: the training domain (``sim``).
        seed: seeds the algorithm and the env.
        device: torch device for SB3 (``cpu`` is faster for PPO's small MLPs).
        log_dir: SB3's TensorBoard log folder, or None.
        on_eval: called with ``(timesteps, mean_return, mean_return_under_noise)`` after each evaluation.
        progress: called with the number of new env steps, for a progress bar.

    Returns:
        The trained teacher (not yet saved).
    """
    import stable_baselines3 as sb3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from rlcyclegan.envs import ENV_ID, load_domain

    algo_cls = {"ppo": sb3.PPO, "sac": sb3.SAC, "td3": sb3.TD3}[config.algo]
    kwargs = {**ALGO_DEFAULTS[config.algo], **config.algo_kwargs}
    kwargs["policy_kwargs"] = _policy_kwargs(kwargs.get("policy_kwargs", {}))
    env_kwargs = {"domain": load_domain(domain), "obs_type": "state", "max_episode_steps": config.max_episode_steps}
    noise = {"wrapper_class": ActionNoise, "wrapper_kwargs": {"sigma": config.action_noise, "seed": seed}} \
        if config.action_noise > 0 else {}
    venv = make_vec_env(ENV_ID, n_envs=1, seed=seed, env_kwargs=env_kwargs, **noise)
    if config.normalize:
        gamma = kwargs.get("gamma", 0.99)
        venv = VecNormalize(venv, norm_obs=True, norm_reward=config.algo in _ON_POLICY, gamma=gamma)
    model = algo_cls("MlpPolicy", venv, seed=seed, device=device, verbose=0,
                     tensorboard_log=str(log_dir) if log_dir else None, **kwargs)

    def snapshot() -> Teacher:
        if isinstance(venv, VecNormalize):
            rms = venv.obs_rms
            return Teacher(model, ObsNormalizer(rms.mean.copy(), rms.var.copy(), venv.clip_obs, venv.epsilon))
        return Teacher(model)

    class _Hooks(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = config.eval_every

        def _on_step(self) -> bool:
            if progress is not None:
                progress(self.training_env.num_envs)
            if self.num_timesteps >= self.next_eval:
                self.next_eval += config.eval_every
                teacher = snapshot()
                returns = evaluate_teacher(teacher, domain, config.eval_episodes, seed + 10_000,
                                           config.max_episode_steps)
                self.logger.record("eval/teacher_return", float(returns.mean()))
                noisy = float("nan")
                if config.robustness_noise > 0:
                    noisy = float(evaluate_teacher(teacher, domain, config.eval_episodes, seed + 20_000,
                                                   config.max_episode_steps, config.robustness_noise).mean())
                    self.logger.record("eval/teacher_return_noisy", noisy)
                if on_eval is not None:
                    on_eval(self.num_timesteps, float(returns.mean()), noisy)
            return True

    start = time.perf_counter()
    model.learn(config.total_timesteps, callback=_Hooks(), tb_log_name="teacher")
    model.logger.record("charts/teacher_wall_s", time.perf_counter() - start)
    teacher = snapshot()
    venv.close()
    return teacher
