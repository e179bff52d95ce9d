"""Where a pixel student's return goes: the nose-up trap, and how close the teacher's gait runs to it.

The standard seed-0 student's stalled episodes all end the same way: the torso pitched up about 1.1 rad,
the cheetah standing still. The teacher, handed control there, does not get it moving either, so DAgger's
labels in the trap teach nothing; what matters is how often the student's small errors carry it in. This
script measures both sides of that:

1. the teacher alone, on the true state, under Gaussian action noise of each std, in each domain: return
   and how many episodes end nose-up (how close its gait runs to the trap);
2. the student in its own training domain: each episode's return, where it stalled and its pitch there,
   and whether the teacher, handed control at the stall, gets the cheetah moving again.

    python experiments/nose_up_trap.py runs/std30 [--episodes 10] [--noise 0 0.1 0.2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np

from rlcyclegan.agents.policies import PixelPolicy, load_policy
from rlcyclegan.agents.teacher import Teacher, evaluate_teacher, load_teacher, state_observation
from rlcyclegan.config import load_yaml
from rlcyclegan.envs import make_env

NOSE_UP = 0.9
"""Root pitch (rad) beyond which an episode's end counts as nose-up."""
STALL_SPEED = 1.0
"""Forward speed (m/s), averaged over ``STALL_WINDOW`` steps, below which the cheetah has stalled."""
STALL_WINDOW = 30
HANDOVER_STEPS = 300


def teacher_under_noise(teacher: Teacher, domain: str, noise: float, episodes: int,
                        seed: int) -> tuple[np.ndarray, int]:
    """Returns of the teacher's deterministic episodes with noisy executed actions; episodes ending nose-up."""
    pitches = []
    returns = evaluate_teacher(teacher, domain, episodes, seed, 1000, noise,
                               on_episode_end=lambda env: pitches.append(env.unwrapped.data.qpos[2]))
    return returns, int(np.sum(np.array(pitches) > NOSE_UP))


def student_episode(student: PixelPolicy, teacher: Teacher, env: gym.Env, seed: int) -> str:
    """One student episode; at its first stall the teacher takes over for ``HANDOVER_STEPS`` steps."""
    obs, _ = env.reset(seed=seed)
    episode_return, speeds = 0.0, []
    for step in range(1000):
        action, _ = student.predict(obs, deterministic=True)
        obs, reward, *_ = env.step(action)
        episode_return += reward
        speeds.append(env.unwrapped.data.qvel[0])
        if step >= 2 * STALL_WINDOW and np.mean(speeds[-STALL_WINDOW:]) < STALL_SPEED:
            break
    else:
        return f"return {episode_return:7.0f}, no stall"
    pitch = env.unwrapped.data.qpos[2]
    handed = []
    for _ in range(HANDOVER_STEPS):
        env.step(teacher.act(state_observation(env)))
        handed.append(env.unwrapped.data.qvel[0])
    return (f"stalled at step {step} (return so far {episode_return:6.0f}), pitch {pitch:+.2f} rad; "
            f"the teacher then: mean speed {np.mean(handed[-100:]):.2f} m/s "
            f"over its last 100 of {HANDOVER_STEPS} steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a pipeline run directory (teacher/ and policy/ inside)")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.1, 0.2])
    parser.add_argument("--domains", nargs="+", default=["sim", "real"])
    args = parser.parse_args()
    teacher = load_teacher(args.run / "teacher" / "teacher.zip", device="cpu")
    print("teacher on the true state, under action noise (seeds 100+):")
    for domain in args.domains:
        for noise in args.noise:
            returns, nose_up = teacher_under_noise(teacher, domain, noise, args.episodes, seed=100)
            print(f"  {domain:5s} noise {noise:.2f}: return {returns.mean():6.0f} (min {returns.min():6.0f}), "
                  f"nose-up at the end in {nose_up}/{args.episodes}")
    student_dir = args.run / "policy"
    domain = load_yaml(student_dir / "config.yaml")["domain"]
    student = load_policy(student_dir / "student.safetensors", device="cpu")
    height, _, channels = student.observation_space.shape
    env = make_env(domain, image_size=height, frame_stack=channels // 3,
                   max_episode_steps=1000 + HANDOVER_STEPS)
    print(f"student in {domain} (seeds 0+):")
    for i in range(args.episodes):
        print(f"  episode {i}: {student_episode(student, teacher, env, seed=i)}", flush=True)
    env.close()


if __name__ == "__main__":
    main()
