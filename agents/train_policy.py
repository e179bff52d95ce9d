"""The ``train-policy`` pipeline: teacher on the true state, then the pixel student by DAgger, with logs.

Run directory ``runs/{env_id}__{exp_name}__{seed}__{time}`` (or ``out``) holds::

    config.yaml                  the full config of the run
    teacher.zip                  SB3 model (``PPO.load``), plus teacher.obs_norm.json when normalized
    student.safetensors          the pixel student (``load_policy``)
    summary.json                 returns of teacher and student, wall times, peak memory
    events.out.tfevents.*        TensorBoard: charts/, losses/, eval/ (the teacher's SB3 logs in teacher_1/)
"""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlcyclegan.agents.dagger import DAggerConfig, IterationStats, train_dagger
from rlcyclegan.agents.evaluation import evaluate_policy, summarize
from rlcyclegan.agents.student import PixelStudentPolicy
from rlcyclegan.agents.teacher import Teacher, TeacherConfig, evaluate_teacher, load_teacher, train_teacher
from rlcyclegan.config import save_config, to_dict


@dataclass
class StudentConfig:
    """Size of the student's CNN and MLP."""

    features_dim: int = 256
    hidden_dim: int = 256
    width: int = 16
    """Channels of the first conv layer (doubling at the second)."""


@dataclass
class PolicyTrainConfig:
    """``rlcyclegan train-policy``: budgets live in ``experiments/policy_{quick,standard}.yaml``."""

    exp_name: str = "policy"
    domain: str = "sim"
    seed: int = 0
    device: str = "auto"
    """Torch device of the student (``auto``: CUDA when available). The teacher's small MLPs run on CPU."""
    torch_threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    image_size: int = 64
    frame_stack: int = 3
    max_episode_steps: int = 1000
    teacher_path: Path | None = None
    """Reuse this teacher zip instead of training one."""
    teacher_only: bool = False
    """Stop after the teacher and its evaluation. The pipeline trains the student later, as one of the jobs
    beside the translators, which need only the teacher: the student then leaves the critical path."""
    out: Path | None = None
    """Run directory; default ``runs/{env_id}__{exp_name}__{seed}__{time}``."""
    eval_episodes: int = 10
    """Final evaluation episodes of teacher and student (same reset seeds)."""
    eval_seed: int = 10_000
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    dagger: DAggerConfig = field(default_factory=DAggerConfig)

    def __post_init__(self) -> None:
        if self.eval_episodes < 1:
            raise ValueError(f"eval_episodes must be at least 1, got {self.eval_episodes}")

    def run_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        from rlcyclegan.envs import NAMED_ENV_IDS

        env_id = NAMED_ENV_IDS.get(self.domain, self.domain).split("/")[-1]
        return Path("runs") / f"{env_id}__{self.exp_name}__{self.seed}__{int(time.time())}"


def peak_memory_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB (Linux ``ru_maxrss`` is KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _log_iteration(writer: Any, stats: IterationStats, bar: tqdm) -> None:
    step = stats.samples
    writer.add_scalar("losses/dagger_onpolicy", stats.onpolicy_loss, step)
    writer.add_scalar("losses/dagger_train", stats.train_loss, step)
    writer.add_scalar("losses/dagger_holdout", stats.holdout_loss, step)
    writer.add_scalar("charts/dagger_beta", stats.beta, step)
    for episode_return in stats.episode_returns:
        writer.add_scalar("charts/episode_return", episode_return, step)
    if stats.validation_return is not None:
        writer.add_scalar("eval/dagger_validation_return", stats.validation_return, step)
    bar.set_postfix(it=stats.iteration, beta=f"{stats.beta:.2f}", onpolicy=f"{stats.onpolicy_loss:.4f}",
                    holdout=f"{stats.holdout_loss:.4f}")


def train_policy(config: PolicyTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or load) the teacher, then the student by DAgger (unless ``teacher_only``), evaluate them; write
    everything to the run dir.

    Returns:
        The summary also written to ``summary.json``.

    Raises:
        FileNotFoundError: if ``teacher_path`` is given but missing.
    """
    from torch.utils.tensorboard import SummaryWriter

    from rlcyclegan.device import resolve_device
    from rlcyclegan.seeding import seed_everything

    if config.teacher_path is not None and not Path(config.teacher_path).is_file():
        raise FileNotFoundError(f"teacher not found: {config.teacher_path} (omit teacher_path to train one)")
    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    run_dir = config.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    writer = SummaryWriter(str(run_dir))
    writer.add_text("hyperparameters", "```\n" + json.dumps(to_dict(config), indent=2) + "\n```")
    summary: dict[str, Any] = {"run_dir": str(run_dir), "device": str(device)}
    start = time.perf_counter()

    teacher: Teacher
    if config.teacher_path is not None:
        teacher = load_teacher(config.teacher_path, device="cpu")
        summary["teacher_path"] = str(config.teacher_path)
    else:
        with tqdm(total=config.teacher.total_timesteps, desc="teacher", unit="step", disable=not progress) as bar:
            def on_eval(steps: int, mean_return: float, noisy_return: float) -> None:
                writer.add_scalar("eval/teacher_return", mean_return, steps)
                writer.add_scalar("eval/teacher_return_noisy", noisy_return, steps)
                writer.add_scalar("charts/teacher_wall_s", time.perf_counter() - start, steps)
                bar.set_postfix(eval_return=f"{mean_return:.0f}", noisy=f"{noisy_return:.0f}")

            teacher = train_teacher(config.teacher, config.domain, config.seed, "cpu", log_dir=run_dir,
                                    on_eval=on_eval, progress=bar.update)
        teacher.save(run_dir / "teacher.zip")
        summary["teacher_path"] = str(run_dir / "teacher.zip")
    summary["teacher_wall_s"] = time.perf_counter() - start
    student = None if config.teacher_only else _train_student(config, teacher, device, run_dir, writer, summary, progress)

    eval_start = time.perf_counter()
    teacher_returns = evaluate_teacher(teacher, config.domain, config.eval_episodes, config.eval_seed,
                                       config.max_episode_steps)
    teacher_summary = summarize(teacher_returns)
    writer.add_scalar("eval/teacher_return", teacher_summary.mean, config.teacher.total_timesteps)
    summary.update(teacher_return=teacher_summary._asdict(), teacher_returns=teacher_returns.tolist())
    if student is not None:
        with tqdm(total=config.eval_episodes, desc="eval student", unit="ep", disable=not progress) as bar:
            student_returns = evaluate_policy(student, config.domain, config.eval_episodes, config.eval_seed,
                                              config.max_episode_steps, on_episode=lambda *_: bar.update())
        student_summary = summarize(student_returns)
        writer.add_scalar("eval/student_return", student_summary.mean, config.dagger.iterations)
        summary.update(
            student_return=student_summary._asdict(), student_returns=student_returns.tolist(),
            student_over_teacher=student_summary.mean / teacher_summary.mean if teacher_summary.mean else float("nan"),
        )
    summary.update(eval_wall_s=time.perf_counter() - eval_start, total_wall_s=time.perf_counter() - start,
                   peak_memory_mb=peak_memory_mb())
    writer.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    return summary


def _train_student(config: PolicyTrainConfig, teacher: Teacher, device: torch.device, run_dir: Path, writer: Any,
                   summary: dict[str, Any], progress: bool) -> PixelStudentPolicy:
    """DAgger of the pixel student from ``teacher`` in ``config.domain``; saved to the run dir."""
    from rlcyclegan.envs import make_env

    student_start = time.perf_counter()
    env = make_env(config.domain, image_size=config.image_size, frame_stack=config.frame_stack,
                   max_episode_steps=config.max_episode_steps)
    student = PixelStudentPolicy.for_spaces(env.observation_space, env.action_space,
                                            **dataclasses.asdict(config.student)).to(device)
    dagger = config.dagger
    total = dagger.iterations * (dagger.steps_per_iteration + dagger.gradient_steps)

    def validate(candidate: PixelStudentPolicy) -> float:
        return float(evaluate_policy(candidate, config.domain, dagger.validation_episodes, dagger.validation_seed,
                                     config.max_episode_steps).mean())

    with tqdm(total=total, desc="dagger", unit="step", disable=not progress) as bar:
        buffer, history = train_dagger(student, teacher, env, dagger, seed=config.seed,
                                       on_iteration=lambda s: _log_iteration(writer, s, bar), on_progress=bar.update,
                                       validate=validate if dagger.validation_episodes > 0 else None)
    env.close()
    student.save(run_dir / "student.safetensors")
    summary["dagger_samples"] = len(buffer)
    summary["dagger"] = [dataclasses.asdict(s) for s in history]
    validated = [s for s in history if s.validation_return is not None]
    if validated:
        summary["dagger_selected_iteration"] = max(validated, key=lambda s: s.validation_return).iteration
    summary["student_wall_s"] = time.perf_counter() - student_start
    return student


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")
