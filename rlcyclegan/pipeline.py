"""The end-to-end pipeline: policy -> unpaired rollouts -> Q-networks -> translators -> evaluation -> report.

Each stage writes its outputs under the run directory and is skipped when they exist (``force`` redoes
it), so any stage can be re-run alone and an interrupted pipeline resumes where it stopped. Evaluation
goes by job: a condition, the translation quality or the videos run again only when the files they read
(by content) or their settings changed, so a new student or translator costs only its own jobs. A
translator with validation seeds (``TranslatorRun.select_on``) deploys its best checkpoint on validation
episodes, chosen at the start of the evaluation. Stage wall times accumulate in ``stages.json`` and end up
in ``results.json``.

Independent trainings (the two Q-networks; the translators and the domain-randomized student; the
evaluation conditions) run as ``jobs`` processes at once, one torch thread each. On a 2-core CPU that
is the cheap way to use both cores: small batch-1 networks gain little from a second OpenMP thread
(which spin-waits as soon as anything else runs), while a second process doubles the throughput.

Layout of ``RUN``::

    policy/student.safetensors      the sim-trained pixel policy (teacher + DAgger)
    dr_policy/student.safetensors   the same, trained on the randomized domain (standard preset)
    data/{sim,real,real_test}/      rollouts of the behaviour policy with action noise (real_test: held out)
    data/{sim,real}_check/          held-out rollouts, longer, for the Q-networks' Monte-Carlo check
    data/real_as_sim/               data/real's true states rendered in sim (paired oracle only)
    data/real_as_sim_segmentation/  ... and their sim segmentation (an oracle with loss.paired_ignore only)
    q/{sim,real}/q.safetensors      pixel Q-networks (TD on each domain's rollouts)
    translators/NAME/               trainer runs (checkpoints/latest holds the generators)
    translators/NAME/selection.json validation returns of its checkpoints and the one deployed (``select_on``)
    results.json, report.md, translations.png, videos/*.gif
    evaluation.json                 each evaluation job's result with the key of its inputs
    segmenter.safetensors           the FCN-score's segmenter, reused while the sim rollouts are unchanged
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import platform
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

import rlcyclegan
from rlcyclegan.config import ConfigError, load_config, load_yaml, to_dict
from rlcyclegan.fileio import content_key, read_json_cache, write_json_atomically

if TYPE_CHECKING:
    from rlcyclegan.segmentation import SegmentationNet
    from rlcyclegan.train_config import TrainConfig
    from rlcyclegan.wrappers import FrameTranslator

PERFECT = "real + perfect translation (reference)"
"""The policy shown the true sim rendering of each real state: what the physics gap alone costs."""
STAGES = ("teacher", "data", "q", "train", "evaluate")
"""``train`` runs every training that needs only the teacher, the rollouts and the Q-networks, as parallel
jobs: the pixel student in ``sim``, the domain-randomized student (``dr_policy``) and the translators. The
student used to train right after the teacher, on one core, while the other core idled."""
HELD_OUT_SEED_OFFSET = 100_000
"""Seed distance between the collections that must not share start states: the training rollouts, the held-out
real states and the Q check's rollouts (episode ``i`` of a collection resets with its seed ``+ i``)."""
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
RECHOOSE_THREADS_EVERY = 250
"""Iterations between a parallel translator job's thread-count re-choices (``speed.rechoose_threads_every``).
The train stage's longest job, RL-CycleGAN, outlives the others by minutes (stop 25's quick preset: the last 4
of its 11, standard: about the last third); re-choosing hands it the cores they free, judged by the CPU time
the others used over the last 250 iterations (27-33 s at the presets' speeds; see ``rlcyclegan.cpu_cores``).
Two threads against one on stop 25's CPU: 1.4-1.5x faster at the quick preset's size, 1.36x at the standard's."""


@dataclass
class TranslatorRun:
    """One translator to train: a trainer YAML and overrides on top of it."""

    config: Path
    overrides: list[str] = field(default_factory=list)
    paired: bool = False
    """The paired oracle: trained on real frames with their true sim renderings (``data/real_as_sim``, drawn
    from the hidden states), which no unpaired method sees."""
    select_on: list[int] = field(default_factory=list)
    """Validation reset seeds. When given, every checkpoint the run kept is scored on episodes reset from these
    seeds (the evaluation's episodes and length, the sim policy) and the best one is deployed instead of the
    last: on long schedules the last iterate is not reliably the best, and choosing on the evaluation
    episodes themselves would flatter the result."""


@dataclass
class PipelineConfig:
    """Everything the pipeline does; presets live in ``experiments/pipeline_*.yaml``."""

    preset: str = "quick"
    seed: int = 0
    device: str = "auto"
    image_size: int = 64
    frame_stack: int = 3
    policy_config: Path = EXPERIMENTS / "policy_quick.yaml"
    policy_overrides: list[str] = field(default_factory=list)
    student_domain: str = "sim"
    """The domain whose frames the pixel student learns from (a shipped name or a spec file). The teacher, the
    rollouts, the translators' sim side and the ``sim`` condition stay ``sim``. ``sim_floor_jitter`` draws the sim
    floor at a random phase in every frame, so that the student cannot read its speed off the floor's motion,
    which no per-frame translator reproduces from a real frame (README, *A student that cannot read the floor*)."""
    dr_policy: bool = False
    """Also train a student on the randomized domain (condition ``real + domain randomization``)."""
    collect_episodes: int = 16
    collect_test_episodes: int = 4
    collect_max_steps: int = 250
    collect_noise: float = 0.1
    collect_noise_max: float | None = 0.5
    """Each rollout episode draws its action-noise std from [collect_noise, collect_noise_max]."""
    check_episodes: int = 4
    check_max_steps: int = 500
    """The Q check's own rollouts per domain (same policy and noise): only steps a horizon (299 for gamma
    0.99) from a truncated episode's end can be checked, so long episodes give it most of their steps."""
    behaviour_policy: Literal["teacher", "student"] = "teacher"
    """Who drives the rollouts in both domains: the state teacher (a privileged controller that reads the
    true state, as a working real-world controller or operator would supply the real data) or the sim
    student. The student fails in ``real``, so its real data shows a cheetah on its back: poses the sim
    data never has, which a translator must then invent, and returns too uniform for Q_real to rank."""
    workers: int = 2
    """Rendering processes per collection."""
    jobs: int = 2
    """Independent trainings and evaluation conditions run this many at once, as processes with one torch
    thread each (1: one after another, in this process, with progress bars)."""
    q_config: Path = EXPERIMENTS / "q_quick.yaml"
    q_overrides: list[str] = field(default_factory=list)
    translators: dict[str, TranslatorRun] = field(default_factory=dict)
    translator_overrides: list[str] = field(default_factory=list)
    """Overrides applied to every translator run (e.g. ``iterations=2000``)."""
    eval_episodes: int = 3
    eval_seeds: list[int] = field(default_factory=lambda: [0, 1])
    eval_max_steps: int = 1000
    held_out_frames: int = 256
    segmenter_frames: int = 800
    segmenter_steps: int = 600
    grid_rows: int = 6
    video_steps: int = 150

    def __post_init__(self) -> None:
        for name in ("collect_episodes", "collect_test_episodes", "collect_max_steps", "check_episodes",
                     "check_max_steps", "eval_episodes",
                     "held_out_frames", "segmenter_frames", "workers", "jobs", "image_size", "frame_stack"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.eval_seeds:
            raise ConfigError("eval_seeds must name at least one seed")
        if max(self.collect_episodes, self.collect_test_episodes, self.check_episodes) >= HELD_OUT_SEED_OFFSET:
            raise ConfigError(f"collect_episodes, collect_test_episodes and check_episodes must stay below "
                              f"{HELD_OUT_SEED_OFFSET}, the seed distance between collections")
        from rlcyclegan.envs import load_domain

        load_domain(self.student_domain)  # an unknown name or a bad spec file fails here, before any training
        self.policy_config = _existing(self.policy_config)
        self.q_config = _existing(self.q_config)
        for name, run in self.translators.items():
            run.config = _existing(run.config)
            if overlap := sorted(set(run.select_on) & set(self.eval_seeds)):
                raise ConfigError(f"translators.{name}.select_on shares the seeds {overlap} with eval_seeds; "
                                  "validation needs episodes of its own")


def _existing(path: Path) -> Path:
    """``path`` as given, else relative to the repository (presets name ``experiments/...`` files)."""
    for candidate in (path, EXPERIMENTS.parent / path):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file not found: {path}")


def preset_path(preset: str) -> Path:
    path = EXPERIMENTS / f"pipeline_{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("pipeline_") for p in EXPERIMENTS.glob("pipeline_*.yaml"))
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(known)}")
    return path


@dataclass
class Job:
    """One independent piece of work, ``work(*args)``; picklable (module-level ``work``) to run in a worker."""

    name: str
    work: Callable[..., Any]
    args: tuple = ()


def train_paired(config: TrainConfig, resume: bool, progress: bool) -> Path:
    """Render the paired ground truth ``config`` reads from the hidden real states, then train the translator.

    The rendering is a few minutes of CPU on the standard preset, so it runs inside the job, beside the
    other trainings, instead of holding them back.
    """
    from rlcyclegan.data.paired import rerender_dataset
    from rlcyclegan.train_loop import train

    assert config.data.real is not None and config.data.paired_real is not None
    rerender_dataset(config.data.real, config.data.paired_real)
    if config.loss.paired_ignore:
        assert config.data.paired_real_segmentation is not None
        rerender_dataset(config.data.real, config.data.paired_real_segmentation, segmentation=True)
    return train(config, resume, progress)


def _timed_call(work: Callable[..., Any], args: tuple, threads: int = 0) -> tuple[Any, float]:
    """``work(*args)`` and its wall time; in a worker process, with ``threads`` torch threads."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    start = time.perf_counter()
    return work(*args), time.perf_counter() - start


class _Deferred:
    """A job run in this process when its result is asked for: the in-process twin of a ``Future``."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def result(self) -> tuple[Any, float]:
        return _timed_call(self.job.work, self.job.args)


@dataclass(frozen=True)
class Condition:
    """An evaluation condition, by paths (so a worker process can load it): policy, domain, what it sees."""

    policy: Path
    domain: str
    translator: Path | None = None
    """A translator checkpoint (or run) directory: the policy sees F(real frame)."""
    perfect: bool = False
    """The policy sees the true sim rendering of each real state."""


def condition_returns_of(condition: Condition, episodes: int, seeds: list[int], max_steps: int, device: str,
                         on_episode: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Returns of ``condition`` (see ``rlcyclegan.evaluation.condition_returns``).

    Batch-1 policy and translator inference: one torch thread does it, and extra OpenMP threads spin-wait
    as soon as another job shares the cores (measured: 54 s instead of ~6 s per 500-step episode).
    """
    import torch

    from rlcyclegan.agents.policies import load_policy
    from rlcyclegan.evaluation import PerfectTranslation, condition_returns, translated
    from rlcyclegan.wrappers import FrameTranslator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        wrapper = (PerfectTranslation if condition.perfect else
                   translated(FrameTranslator.from_checkpoint(condition.translator, "real2sim", device=device))
                   if condition.translator is not None else None)
        return condition_returns(load_policy(condition.policy, device=device), condition.domain, wrapper, episodes,
                                 seeds, max_steps, on_episode=on_episode)
    finally:
        torch.set_num_threads(threads)


class Pipeline:
    """Runs the stages of one pipeline configuration in ``run_dir``."""

    def __init__(self, config: PipelineConfig, run_dir: Path, force: bool = False, progress: bool = True) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.force = force
        self.progress = progress
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._times_path = self.run_dir / "stages.json"

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _record(self, name: str, seconds: float) -> None:
        times = json.loads(self._times_path.read_text()) if self._times_path.exists() else {}
        times[name] = round(seconds, 1)
        self._times_path.write_text(json.dumps(times, indent=2))

    def _timed(self, stage: str, done: bool, work: Callable[[], Any]) -> Any:
        """``work()``'s result, its wall time recorded as ``stage``; ``None`` when ``done`` (unless ``force``)."""
        if done and not self.force:
            print(f"[{stage}] outputs exist, skipped (--force redoes it)")
            return None
        print(f"[{stage}] running")
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
        self._record(stage, seconds)
        print(f"[{stage}] done in {seconds:.0f} s")
        return result

    def _parallel(self, count: int) -> bool:
        """Whether ``count`` jobs run as worker processes (else in this process, one after another)."""
        return self.config.jobs > 1 and count > 1

    def _run_jobs(self, jobs: list[Job], on_result: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
        """Runs ``jobs``, ``config.jobs`` at a time; records each one's wall time; returns results by job name.

        A failing job does not stop the others (their outputs are worth keeping); the first failure is
        raised once they are done. ``on_result(name, result)`` sees each result as soon as it is in.
        """
        from tqdm import tqdm

        results: dict[str, Any] = {}
        errors: list[Exception] = []
        parallel = self._parallel(len(jobs))
        with contextlib.ExitStack() as stack:
            if parallel:
                # spawn, not fork: MuJoCo's EGL contexts and OpenMP thread pools do not survive a fork
                pool = stack.enter_context(ProcessPoolExecutor(min(self.config.jobs, len(jobs)),
                                                               mp_context=multiprocessing.get_context("spawn")))
                futures = {pool.submit(_timed_call, job.work, job.args, 1): job.name for job in jobs}
                outcomes = ((futures[f], f) for f in as_completed(futures))
                bar = stack.enter_context(tqdm(total=len(jobs), desc=f"{len(jobs)} jobs, {self.config.jobs} at a time",
                                               unit="job", disable=not self.progress))
            else:  # in this process, one after another: each job shows its own progress
                outcomes = ((job.name, _Deferred(job)) for job in jobs)
                bar = None
            for name, outcome in outcomes:
                try:
                    results[name], seconds = outcome.result()
                except Exception as error:  # reported with the job's name; the others run on
                    errors.append(error)
                    print(f"[{name}] failed: {error}")
                    continue
                self._record(name, seconds)
                print(f"[{name}] done in {seconds:.0f} s")
                if on_result is not None:
                    on_result(name, results[name])
                if bar is not None:
                    bar.update()
        if errors:
            raise errors[0]
        return results

    def run(self, stages: tuple[str, ...] = STAGES) -> None:
        for stage in stages:
            getattr(self, f"stage_{stage}")()

    @property
    def policy_path(self) -> Path:
        return self.run_dir / "policy" / "student.safetensors"

    @property
    def dr_policy_path(self) -> Path:
        return self.run_dir / "dr_policy" / "student.safetensors"

    def data_path(self, split: str) -> Path:
        return self.run_dir / "data" / split

    @property
    def q_dir(self) -> Path:
        return self.run_dir / "q"

    def translator_dir(self, name: str) -> Path:
        return self.run_dir / "translators" / name

    def has_translator(self, name: str) -> bool:
        return (self.translator_dir(name) / "checkpoints" / "latest").is_file()

    # -- stages --------------------------------------------------------------------------------------

    def _policy_config(self, domain: str, out: Path, teacher: Path | None = None, threads: int = 0,
                       teacher_only: bool = False) -> Any:
        """``train-policy``'s config for a teacher-only run or a student run of this pipeline."""
        from rlcyclegan.agents.train_policy import PolicyTrainConfig

        c = self.config
        overrides = [f"domain={domain}", f"out={out}", f"seed={c.seed}", f"device={c.device}",
                     f"image_size={c.image_size}", f"frame_stack={c.frame_stack}", f"teacher_only={teacher_only}"]
        if threads:
            overrides.append(f"torch_threads={threads}")
        if teacher is not None:
            overrides.append(f"teacher_path={teacher}")
        return load_config(PolicyTrainConfig, c.policy_config, [*overrides, *c.policy_overrides])

    def _students(self) -> dict[str, tuple[str, Path]]:
        """The pixel students to train, by name (``sim``; ``randomized`` with ``dr_policy``): domain and weights path."""
        c = self.config
        return {"sim": (c.student_domain, self.policy_path),
                **({"randomized": ("randomized", self.dr_policy_path)} if c.dr_policy else {})}

    def _student_job(self, name: str, parallel: bool) -> Job:
        """DAgger of the pixel student ``name`` (``_students``).

        The sim teacher labels DAgger in every domain: the sim and randomized students then differ only in
        the frames they learned from, which is the comparison the domain-randomization condition makes.
        """
        from rlcyclegan.agents.train_policy import train_policy

        domain, path = self._students()[name]
        config = self._policy_config(domain, path.parent, self.teacher_path, threads=1 if parallel else 0)
        return Job(f"student:{name}", train_policy, (config, self.progress and not parallel))

    def _student_is_kept(self, name: str) -> bool:
        """Whether student ``name`` exists and is reused (not under ``force``).

        Raises:
            ConfigError: when it was trained in another domain than the config names: it is neither reused as the
                wrong student nor overwritten.
        """
        from rlcyclegan.envs import load_domain

        domain, path = self._students()[name]
        if self.force or not path.exists():
            return False
        config_path = path.parent / "config.yaml"
        trained_in = load_yaml(config_path).get("domain") if config_path.is_file() else None
        if trained_in is not None and load_domain(trained_in) != load_domain(domain):
            raise ConfigError(f"{path} was trained in domain {trained_in!r}, not {domain!r}; choose another run "
                              "directory, or --force to train it again")
        return True

    def stage_teacher(self) -> None:
        from rlcyclegan.agents.train_policy import train_policy

        # trained into this run even when a reused student names a teacher elsewhere (--force never
        # overwrites files outside the run)
        self._timed("teacher", self.teacher_path.is_file(),
                    lambda: train_policy(self._policy_config("sim", self.run_dir / "teacher", teacher_only=True),
                                         progress=self.progress))

    @property
    def teacher_path(self) -> Path:
        """The state teacher: ``teacher/teacher.zip``, else the one a reused sim student names in its summary."""
        own = self.run_dir / "teacher" / "teacher.zip"
        summary = self.policy_path.parent / "summary.json"
        if own.is_file() or not summary.exists():
            return own
        named = json.loads(summary.read_text()).get("teacher_path")
        return Path(named) if named else own

    @property
    def behaviour_path(self) -> Path:
        """The rollouts' behaviour policy (``behaviour_policy``)."""
        return self.teacher_path if self.config.behaviour_policy == "teacher" else self.policy_path

    def stage_data(self) -> None:
        from rlcyclegan.data.collect import CollectConfig, collect
        from rlcyclegan.data.storage import list_shards

        c = self.config
        # Episode i of a collection resets the env with seed + i. The held-out real states and the check sets
        # start far from the others so that none of their episodes starts where a training episode did (runs
        # collected before stop 23 reset real_test from seed + 2, the start states of real's episodes 1-5).
        plan = {
            "sim": ("sim", c.collect_episodes, c.seed, c.collect_max_steps),
            "real": ("real", c.collect_episodes, c.seed + 1, c.collect_max_steps),
            "real_test": ("real", c.collect_test_episodes, c.seed + 3 * HELD_OUT_SEED_OFFSET, c.collect_max_steps),
            "sim_check": ("sim", c.check_episodes, c.seed + HELD_OUT_SEED_OFFSET, c.check_max_steps),
            "real_check": ("real", c.check_episodes, c.seed + 2 * HELD_OUT_SEED_OFFSET, c.check_max_steps),
        }

        def complete() -> bool:
            return all(self.data_path(s).is_dir() and len(list_shards(self.data_path(s))) >= n
                       for s, (_, n, _, _) in plan.items())

        def work() -> None:
            if c.behaviour_policy == "student" and not self.policy_path.exists():
                self._run_jobs([self._student_job("sim", parallel=False)])
            for split, (domain, episodes, seed, max_steps) in plan.items():
                collect(CollectConfig(
                    out=self.data_path(split), domain=domain, policy=str(self.behaviour_path), episodes=episodes,
                    noise=c.collect_noise, noise_max=c.collect_noise_max, seed=seed, workers=c.workers, image_size=c.image_size,
                    frame_stack=c.frame_stack, max_steps=max_steps,
                ), progress=self.progress)

        self._timed("data", complete(), work)

    def stage_q(self) -> None:
        from rlcyclegan.agents.q_training import QTrainConfig, run_train_q

        c = self.config
        parallel = self._parallel(2)

        def work() -> None:
            jobs = []
            for domain in ("sim", "real"):
                overrides = [f"data={self.data_path(domain)}", f"check_data={self.data_path(domain + '_check')}",
                             f"out={self.q_dir / domain}", f"seed={c.seed}",
                             f"device={c.device}", f"frame_stack={c.frame_stack}",
                             *(["torch_threads=1"] if parallel else []), *c.q_overrides]
                config = load_config(QTrainConfig, c.q_config, overrides)
                jobs.append(Job(f"q:{domain}", run_train_q, (config, self.progress and not parallel)))
            results = self._run_jobs(jobs)
            summary = {domain: results[f"q:{domain}"] for domain in ("sim", "real")}
            (self.q_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

        self._timed("q", (self.q_dir / "summary.json").exists(), work)

    def stage_train(self) -> None:
        """The sim student, the domain-randomized one (``dr_policy``) and every translator: independent jobs."""
        import shutil

        from rlcyclegan.train_config import TrainConfig
        from rlcyclegan.train_loop import train

        c = self.config
        students = []
        for name in self._students():
            if self._student_is_kept(name):
                print(f"[student:{name}] outputs exist, skipped (--force redoes it)")
            else:
                students.append(name)
        parallel = self._parallel(len(c.translators) + len(students))
        progress = self.progress and not parallel
        unpaired: list[tuple[int, Job]] = []  # (iterations, job)
        paired: list[tuple[int, Job]] = []
        for name, run in c.translators.items():
            overrides = [
                f"exp_name={name}", f"run_dir={self.translator_dir(name)}", f"seed={c.seed}",
                f"data.sim={self.data_path('sim')}", f"data.real={self.data_path('real')}",
                f"data.image_size={c.image_size}", f"speed.device={c.device}",
                f"q.init_sim={self.q_dir / 'sim' / 'q.safetensors'}", f"q.init_real={self.q_dir / 'real' / 'q.safetensors'}",
                *(["speed.threads=1", f"speed.rechoose_threads_every={RECHOOSE_THREADS_EVERY}"] if parallel else []),
                *c.translator_overrides, *run.overrides,
            ]
            if run.paired:
                overrides += [f"data.paired_real={self.data_path('real_as_sim')}",
                              f"data.paired_real_segmentation={self.data_path('real_as_sim_segmentation')}"]
            config = load_config(TrainConfig, run.config, overrides)
            if run.paired and not config.loss.paired_ignore:  # the segmentation is rendered only when read
                config = dataclasses.replace(config, data=dataclasses.replace(config.data, paired_real_segmentation=None))
            done = self.translator_iterations(name)
            if done is not None and done >= config.iterations and not self.force:
                print(f"[translator:{name}] outputs exist, skipped (--force redoes it)")
                continue
            if self.force:
                shutil.rmtree(self.translator_dir(name), ignore_errors=True)
                done = None
            # a run that an interruption left short of its iterations resumes from its latest checkpoint
            job = Job(f"translator:{name}", train_paired if run.paired else train, (config, done is not None, progress))
            (paired if run.paired else unpaired).append((config.iterations, job))
        # Jobs start in this order, `jobs` at a time: unpaired translators with the longest schedule first (in
        # the long preset, RL-CycleGAN's 24,000 iterations are most of the stage). A paired translator trains in
        # about half the time of an unpaired one (no cycle, no second generator), so it goes last, into the gap
        # the longer jobs leave: with std3's job times, 4,073 s with the oracle started third, about 3,650 s
        # with it last.
        jobs = [job for _, job in sorted(unpaired, key=lambda pair: -pair[0])]  # stable among equal schedules
        jobs += [self._student_job(name, parallel) for name in students]
        jobs += [job for _, job in paired]
        if jobs and not self._segmenter_is_current():
            # the FCN-score's segmenter needs only the sim rollouts: trained here, in the time the other core
            # has while RL-CycleGAN trains, it leaves the evaluation stage (quick preset: 92 s of 94 s were the
            # translation-quality job, most of it this training)
            jobs.append(Job("segmenter:sim", self.train_segmenter))
        if jobs:
            self._timed("train", False, lambda: self._run_jobs(jobs))

    def translator_iterations(self, name: str) -> int | None:
        """Iterations in translator ``name``'s latest checkpoint (``None``: no checkpoint yet)."""
        from rlcyclegan.checkpoint import checkpoint_iteration, latest_checkpoint

        latest = latest_checkpoint(self.translator_dir(name))
        return None if latest is None else checkpoint_iteration(latest)

    def stage_evaluate(self, even_if_current: bool = False) -> None:
        """Evaluate, unless ``results.json`` exists and no job's inputs changed; ``even_if_current`` rewrites the
        results and report all the same (from cached job results where the inputs are unchanged)."""
        self.select_checkpoints()
        keys = self._evaluation_keys(self._conditions())  # hashes every input (seconds): once per stage
        stale = self._stale_evaluation_jobs(keys, self._evaluation_cache())
        current = (self.run_dir / "results.json").exists() and not stale
        if current and not self.force:
            if even_if_current:
                self.write_results(self._evaluation_cache())  # nothing ran: no new wall time to record
            else:
                print("[evaluate] outputs exist, skipped (--force redoes it)")
            return
        cache = self._timed("evaluate", False, lambda: self.run_evaluation_jobs(keys))
        self.write_results(cache)  # after the stage's wall time is recorded, so that results.json and the report hold it

    # -- evaluation and report -----------------------------------------------------------------------

    def translators_available(self) -> dict[str, Path]:
        """Each trained translator's deployed checkpoint (``deployed_checkpoint``), by name."""
        return {n: self.deployed_checkpoint(n) for n in self.config.translators if self.has_translator(n)}

    def deployed_checkpoint(self, name: str) -> Path:
        """What translator ``name`` deploys: the checkpoint ``select_checkpoints`` chose for a run with ``select_on``
        seeds, else the latest.

        Raises:
            ValueError: when the run has ``select_on`` seeds and no chosen checkpoint on disk yet.
        """
        from rlcyclegan.checkpoint import latest_checkpoint

        directory = self.translator_dir(name)
        if not self.config.translators[name].select_on:
            latest = latest_checkpoint(directory)
            if latest is None:
                raise ValueError(f"translator {name} has no checkpoint in {directory}")
            return latest
        chosen = self._selection(name).get("selected")
        if chosen is None or not (directory / "checkpoints" / chosen).is_dir():
            raise ValueError(f"translator {name} has no checkpoint chosen on its validation seeds in "
                             f"{self._selection_path(name)}; `rlcyclegan evaluate` chooses one")
        return directory / "checkpoints" / chosen

    def _selection_path(self, name: str) -> Path:
        return self.translator_dir(name) / "selection.json"

    def _selection(self, name: str) -> dict[str, Any]:
        """Translator ``name``'s ``selection.json``: ``validation`` (checkpoint -> key and result), ``selected``."""
        return read_json_cache(self._selection_path(name), "its checkpoints are scored again")

    def select_checkpoints(self) -> None:
        """For each translator with ``select_on`` seeds: every checkpoint it kept, scored on validation episodes,
        and the best one, into ``translators/NAME/selection.json``.

        A checkpoint scored before with the same policy and settings keeps its result (``force`` scores all again),
        so a run trained further costs only its new checkpoints.
        """
        from rlcyclegan.checkpoint import checkpoint_iteration, list_checkpoints

        c = self.config
        tables: dict[str, dict[str, Any]] = {}
        pending: dict[str, tuple[str, str, str]] = {}  # job name -> translator, checkpoint, key
        jobs: list[Job] = []
        for name, run in c.translators.items():
            if not run.select_on or not self.has_translator(name):
                continue
            cached = {} if self.force else self._selection(name).get("validation", {})
            tables[name] = {}
            for checkpoint in list_checkpoints(self.translator_dir(name)):
                key = content_key([self.policy_path, checkpoint], {
                    "image_size": c.image_size, "frame_stack": c.frame_stack, "episodes": c.eval_episodes,
                    "seeds": run.select_on, "max_steps": c.eval_max_steps})
                if cached.get(checkpoint.name, {}).get("key") == key:
                    tables[name][checkpoint.name] = cached[checkpoint.name]
                    continue
                job = Job(f"select:{name}@{checkpoint_iteration(checkpoint)}", condition_returns_of,
                          (Condition(self.policy_path, "real", translator=checkpoint), c.eval_episodes, run.select_on,
                           c.eval_max_steps, c.device))
                pending[job.name] = (name, checkpoint.name, key)
                jobs.append(job)

        def remember(job_name: str, result: Any) -> None:
            name, checkpoint, key = pending[job_name]
            tables[name][checkpoint] = {"key": key, "result": result}
            self._write_selection(name, tables[name])

        if jobs:
            self._timed("select", False, lambda: self._run_jobs(jobs, on_result=remember))
        for name, table in tables.items():  # also forgets checkpoints the run has pruned since
            self._write_selection(name, table)

    def _write_selection(self, name: str, validation: dict[str, Any]) -> None:
        ordered = sorted(validation)  # step_{n:08d}: by iteration
        best = max(ordered, key=lambda checkpoint: validation[checkpoint]["result"]["mean"])  # the earliest of equals
        write_json_atomically(self._selection_path(name), {
            "seeds": self.config.translators[name].select_on, "selected": best,
            "validation": {checkpoint: validation[checkpoint] for checkpoint in ordered}})

    def _conditions(self) -> dict[str, Condition]:
        conditions = {
            "sim": Condition(self.policy_path, "sim"),
            "real, no adaptation": Condition(self.policy_path, "real"),
            **{f"real + {n}": Condition(self.policy_path, "real", translator=p)
               for n, p in self.translators_available().items()},
            PERFECT: Condition(self.policy_path, "real", perfect=True),
        }
        if self.dr_policy_path.exists():
            conditions["real + domain randomization"] = Condition(self.dr_policy_path, "real")
        return conditions

    @property
    def _evaluation_cache_path(self) -> Path:
        return self.run_dir / "evaluation.json"

    def _evaluation_keys(self, conditions: dict[str, Condition]) -> dict[str, str]:
        """Each evaluation job's name -> the key of everything its result depends on (files by content, settings).

        A job whose key is unchanged since its result was cached is not run again: training a new student
        re-runs its conditions and videos, not the translation-quality job, which depends on the translators
        alone (20-26 min of the standard preset's evaluation).
        """
        c = self.config
        shared = {"image_size": c.image_size, "frame_stack": c.frame_stack, "seed": c.seed}
        checkpoints = self.translators_available()
        q_files = [self.q_dir] if (self.q_dir / "summary.json").exists() else []
        keys = {"evaluate:translation quality": content_key(
            [self.data_path("real_test"), self.data_path("sim"), *q_files, *checkpoints.values()],
            {**shared, "translators": list(checkpoints), "held_out_frames": c.held_out_frames,
             "segmenter_frames": c.segmenter_frames, "segmenter_steps": c.segmenter_steps, "grid_rows": c.grid_rows})}
        for name, condition in conditions.items():
            translator = [] if condition.translator is None else [condition.translator]
            keys[f"evaluate:{name}"] = content_key(
                [condition.policy, *translator],
                {**shared, "domain": condition.domain, "perfect": condition.perfect, "episodes": c.eval_episodes,
                 "seeds": c.eval_seeds, "max_steps": c.eval_max_steps})
        keys["evaluate:videos"] = content_key([self.policy_path, *checkpoints.values()],
                                              {**shared, "translators": list(checkpoints), "steps": c.video_steps})
        return keys

    def _evaluation_cache(self) -> dict[str, Any]:
        """Cached evaluation results by job name, ``{"key": ..., "result": ...}`` (empty under ``force``)."""
        if self.force:
            return {}
        return read_json_cache(self._evaluation_cache_path, "every evaluation job runs again")

    def _stale_evaluation_jobs(self, keys: dict[str, str], cache: dict[str, Any]) -> list[str]:
        """Jobs whose inputs changed since their cached result, or whose files (picture grid, videos) are gone."""
        outputs = {"evaluate:translation quality": self.run_dir / "translations.png",
                   "evaluate:videos": self.run_dir / "videos"}
        return [name for name, key in keys.items()
                if cache.get(name, {}).get("key") != key or not outputs.get(name, self.run_dir).exists()]

    def run_evaluation_jobs(self, keys: dict[str, str]) -> dict[str, Any]:
        """Every condition's returns, translation quality and videos (as jobs), into ``evaluation.json``; returns
        its contents (job name -> key and result).

        Jobs whose inputs are unchanged keep their cached result; ``force`` runs all. ``keys``: the jobs' input
        keys (``_evaluation_keys``).
        """
        from tqdm import tqdm

        c = self.config
        conditions = self._conditions()
        cache = self._evaluation_cache()
        stale = self._stale_evaluation_jobs(keys, cache)
        for name in keys:
            if name not in stale:
                print(f"[{name}] inputs unchanged, cached result reused")

        def remember(name: str, result: Any) -> None:
            cache[name] = {"key": keys[name], "result": result}
            write_json_atomically(self._evaluation_cache_path, cache)

        jobs = [Job("evaluate:translation quality", self.translation_quality)]  # the longest job first
        to_run = {name: condition for name, condition in conditions.items() if f"evaluate:{name}" in stale}
        parallel = self._parallel(len(stale))
        total = len(to_run) * c.eval_episodes * len(c.eval_seeds)
        with tqdm(total=total, desc="evaluate", unit="ep", disable=not self.progress or parallel) as bar:
            on_episode = None if parallel else (lambda *_: bar.update())
            jobs += [Job(f"evaluate:{name}", condition_returns_of,
                         (condition, c.eval_episodes, c.eval_seeds, c.eval_max_steps, c.device, on_episode))
                     for name, condition in to_run.items()]
            jobs.append(Job("evaluate:videos", self.record_videos))
            self._run_jobs([job for job in jobs if job.name in stale], on_result=remember)
        return cache

    def write_results(self, cache: dict[str, Any]) -> dict[str, Any]:
        """``results.json`` and ``report.md`` from the evaluation jobs' results (``cache``, as in ``evaluation.json``)
        and the stage wall times so far."""
        from rlcyclegan.device import resolve_device

        c = self.config
        conditions = self._conditions()
        results: dict[str, Any] = {"returns": {name: cache[f"evaluate:{name}"]["result"] for name in conditions},
                                   "translation": cache["evaluate:translation quality"]["result"]}
        selections = {name: self._selection(name) for name, run in c.translators.items()
                      if run.select_on and self.has_translator(name)}
        if selections:
            results["selection"] = {name: {
                "seeds": s["seeds"], "deployed": s["selected"],
                "validation": {checkpoint: v["result"] for checkpoint, v in s["validation"].items()},
            } for name, s in selections.items()}
        if (self.q_dir / "summary.json").exists():
            results["q_networks"] = json.loads((self.q_dir / "summary.json").read_text())
        policy_summary = self.policy_path.parent / "summary.json"
        if policy_summary.exists():
            summary = json.loads(policy_summary.read_text())
            trained = self.policy_path.parent / "config.yaml"  # the student's own record: a reused one may predate the config
            results["policy"] = {"student_domain": load_yaml(trained).get("domain") if trained.is_file() else None,
                                 **{k: summary.get(k) for k in ("teacher_return", "student_return", "student_over_teacher",
                                                                "total_wall_s", "peak_memory_mb")}}
        results["stage_wall_s"] = json.loads(self._times_path.read_text()) if self._times_path.exists() else {}
        results["config"] = to_dict(c)
        results["versions"] = _versions()
        results["device"] = str(resolve_device(c.device))
        (self.run_dir / "results.json").write_text(json.dumps(results, indent=2))
        (self.run_dir / "report.md").write_text(render_report(results, self.run_dir))
        return results

    def _translators(self, dirs: dict[str, Path] | None = None) -> dict[str, FrameTranslator]:
        """The real2sim generators of ``dirs`` (name -> translator run or checkpoint directory), by default the
        run's own."""
        from rlcyclegan.wrappers import FrameTranslator

        dirs = self.translators_available() if dirs is None else dirs
        return {n: FrameTranslator.from_checkpoint(p, "real2sim", device=self.config.device) for n, p in dirs.items()}

    def translation_quality(self, translator_dirs: dict[str, Path] | None = None,
                            grid_path: Path | None = None) -> dict[str, dict[str, float]]:
        """Each translator's F(y) on held-out real states against their true sim renderings (L1, PSNR, SSIM,
        FCN-score, Q-consistency); also writes the picture grid (``translations.png`` by default).

        ``translator_dirs`` (name -> translator run or checkpoint directory) defaults to the run's own; others, such
        as those of ``experiments/score_translators.py``, are scored on the same held-out states with the same
        segmenter.
        """
        import imageio.v3 as iio

        from rlcyclegan.data.loaders import RolloutDataset
        from rlcyclegan.envs.commands import image_grid
        from rlcyclegan.evaluation import HeldOutReal, load_q_pair, side_by_side_rows, translation_quality

        c = self.config
        translators = self._translators(translator_dirs)
        held_out = HeldOutReal(RolloutDataset(self.data_path("real_test"), frame_stack=c.frame_stack),
                               c.held_out_frames, seed=c.seed)
        segmenter = self.segmenter()
        q_sim, q_real = load_q_pair(self.q_dir) if (self.q_dir / "summary.json").exists() else (None, None)
        quality = {
            "true sim rendering": translation_quality(None, _with_frames(held_out, held_out.true_sim), segmenter),
            "no translation": translation_quality(None, held_out, segmenter, q_sim, q_real),
            **{name: translation_quality(t, held_out, segmenter, q_sim, q_real) for name, t in translators.items()},
        }
        grid = image_grid(side_by_side_rows(translators, held_out, c.grid_rows), columns=2 + len(translators), scale=2)
        iio.imwrite(grid_path or self.run_dir / "translations.png", grid)
        return quality

    def segmenter(self) -> SegmentationNet:
        """The FCN-score's segmenter, trained on true ``sim`` renders of the run's sim states, on the run's device.

        The train stage trains it (``train_segmenter``, beside the translators) into ``segmenter.safetensors``;
        it is reused while the sim rollouts and its settings are unchanged, and trained here only when missing or
        stale: on one CPU thread its 1,500 steps take 0.5-0.6 s each, and every new translator's
        translation-quality job (and ``experiments/score_translators.py --quality``) would pay for them again.
        """
        from rlcyclegan.device import resolve_device
        from rlcyclegan.segmentation import load_segmenter

        path = self.segmenter_path
        if self._segmenter_is_current():
            try:
                segmenter, _ = load_segmenter(path, resolve_device(self.config.device))
                print(f"[evaluate] segmenter reused from {path}")
                return segmenter
            except ValueError as error:  # its header is right but its weights are not
                print(f"[evaluate] {error}; training it again")
        elif path.exists() and not self.force:
            print(f"[evaluate] {path} is not a segmenter trained from these sim rollouts and settings; training it again")
        return self.train_segmenter()

    @property
    def segmenter_path(self) -> Path:
        return self.run_dir / "segmenter.safetensors"

    def _segmenter_tag(self) -> str:
        c = self.config
        return content_key([self.data_path("sim")], {"image_size": c.image_size, "frame_stack": c.frame_stack,
                                                     "seed": c.seed, "frames": c.segmenter_frames,
                                                     "steps": c.segmenter_steps})

    def _segmenter_is_current(self) -> bool:
        """A saved segmenter trained from the current sim rollouts and settings (``force``: never)."""
        from rlcyclegan.segmentation import read_segmenter_tag

        return (not self.force and self.segmenter_path.exists()
                and read_segmenter_tag(self.segmenter_path) == self._segmenter_tag())

    def train_segmenter(self) -> SegmentationNet:
        """Train the segmenter on ``segmenter_frames`` sim states of the run's sim rollouts; saved with its tag."""
        from rlcyclegan.data.loaders import RolloutDataset
        from rlcyclegan.device import resolve_device
        from rlcyclegan.envs import load_domain
        from rlcyclegan.segmentation import render_segmentation_set, save_segmenter, train_segmenter

        c = self.config
        sim_train = RolloutDataset(self.data_path("sim"), frame_stack=c.frame_stack)
        qpos, _ = sim_train.true_states(sim_train.sample_indices(c.segmenter_frames, np.random.default_rng(c.seed)))
        images, labels = render_segmentation_set(load_domain("sim"), qpos, c.image_size)
        segmenter = train_segmenter(images, labels, steps=c.segmenter_steps, seed=c.seed,
                                    device=resolve_device(c.device))
        save_segmenter(segmenter, self.segmenter_path, self._segmenter_tag())
        return segmenter

    def record_videos(self) -> None:
        """GIFs of the policy in ``real``: left what the camera sees, right what the policy sees."""
        import imageio.v3 as iio

        from rlcyclegan.agents.policies import load_policy
        from rlcyclegan.envs import make_env
        from rlcyclegan.wrappers import TranslateObservation

        c = self.config
        policy = load_policy(self.policy_path, device=c.device)
        videos = self.run_dir / "videos"
        videos.mkdir(exist_ok=True)
        for name, translator in {"no_adaptation": None, **self._translators()}.items():
            raw_env = make_env("real", image_size=c.image_size, frame_stack=c.frame_stack)
            env = TranslateObservation(raw_env, translator) if translator is not None else raw_env
            obs, _ = env.reset(seed=c.seed)
            frames = []
            for _ in range(c.video_steps):
                seen = obs[..., -3:]
                camera = raw_env.unwrapped._frames[..., -3:]
                frames.append(np.kron(np.concatenate([camera, seen], axis=1), np.ones((3, 3, 1), dtype=np.uint8)))
                action, _ = policy.predict(obs, deterministic=True)
                obs, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
            env.close()
            iio.imwrite(videos / f"real_{name.replace(' ', '_')}.gif", np.stack(frames), duration=50, loop=0)


def _with_frames(held_out: Any, frames: np.ndarray) -> Any:
    """A view of ``held_out`` whose frames are replaced (to score the true renders themselves)."""
    import copy

    view = copy.copy(held_out)
    view.frames = frames
    return view


def _versions() -> dict[str, str]:
    import gymnasium
    import mujoco
    import stable_baselines3
    import torch

    return {"rlcyclegan": rlcyclegan.__version__, "torch": torch.__version__, "mujoco": mujoco.__version__,
            "gymnasium": gymnasium.__version__, "stable_baselines3": stable_baselines3.__version__,
            "python": platform.python_version(), "machine": platform.machine()}


def render_returns_table(results: dict[str, Any]) -> str:
    """The returns as a markdown table, with each condition as a percentage of the references.

    A percentage of a reference whose 95% interval reaches down to zero or below is left out ("-"): a
    policy that does not move makes any ratio to it meaningless (a return of 3 made 911 read as 30,000%).
    """
    returns = results["returns"]
    reference = {k: returns[k] for k in ("sim", PERFECT, "real + oracle") if k in returns}
    header = "| condition | mean return | std | 95% CI | episodes |" + "".join(f" % of {k} |" for k in reference)
    lines = [header, "|---|---:|---:|---|---:|" + "---:|" * len(reference)]
    for name, r in returns.items():
        ratios = "".join(f" {100 * r['mean'] / v['mean']:.0f}% |" if v["ci95"][0] > 0 else " - |"
                         for v in reference.values())
        lines.append(f"| {name} | {r['mean']:.1f} | {r['std']:.1f} | [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}] "
                     f"| {r['n']} |{ratios}")
    return "\n".join(lines)


def render_report(results: dict[str, Any], run_dir: Path) -> str:
    """``report.md``: the returns table, translation quality, Q-network checks, wall times."""
    lines = [f"# rlcyclegan pipeline report: preset `{results['config']['preset']}`", "",
             "## Returns of the sim-trained pixel policy", "", render_returns_table(results), ""]
    lines += ["## Translation quality on held-out real states (F(y) against the true sim rendering)", "",
              "| translator | L1 | PSNR dB | SSIM | FCN per-pixel acc | FCN per-class acc | FCN class IoU "
              "| Q-consistency |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in results["translation"].items():
        q = f"{s['q_consistency']:.3f}" if "q_consistency" in s else "-"
        lines.append(f"| {name} | {s['l1']:.3f} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['fcn_per_pixel_accuracy']:.3f} "
                     f"| {s['fcn_per_class_accuracy']:.3f} | {s['fcn_class_iou']:.3f} | {q} |")
    lines += ["", "Columns of `translations.png`: real frame | F(real) for each translator | true sim rendering.", ""]
    if "selection" in results:
        lines += ["## Checkpoints chosen on validation episodes", "",
                  "Each of these translators deploys the checkpoint with the best mean return in `real` on episodes "
                  "reset from its validation seeds, which the evaluation above does not use.", "",
                  "| translator | validation seeds | mean validation return per checkpoint | deployed |", "|---|---|---|---|"]
        for name, s in results["selection"].items():
            scores = ", ".join(f"{checkpoint.removeprefix('step_').lstrip('0')}: {r['mean']:.1f}"
                               for checkpoint, r in s["validation"].items())
            lines.append(f"| {name} | {s['seeds']} | {scores} | {s['deployed']} |")
        lines.append("")
    if "q_networks" in results:
        lines += ["## Pixel Q-networks", "", "```", json.dumps(results["q_networks"], indent=2), "```", ""]
    if "policy" in results:
        lines += ["## Policy (teacher and DAgger student, in the student's training domain)", "", "```", json.dumps(results["policy"], indent=2),
                  "```", ""]
    stages = results["stage_wall_s"]
    lines += ["## Wall time per stage (s)", "", "Jobs (`stage:name`) ran inside their stage, "
              f"{results['config'].get('jobs', 1)} at a time; the total adds up the stages only.", "",
              "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in stages.items()]
    lines += [f"| **total** | **{sum(v for k, v in stages.items() if ':' not in k):.0f}** |"]
    lines += ["", f"Device: {results['device']}. Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
              "", f"Run directory: `{run_dir}`. All figures are in `results.json`."]
    return "\n".join(lines) + "\n"
