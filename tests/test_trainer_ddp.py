"""``rlcyclegan train`` under ``torchrun --nproc_per_node 2`` on CPU (gloo): DistributedDataParallel end to end.

The run checks itself at the end: every process compares its networks' parameter sums with the others' and
raises if any differ, so a broken gradient all-reduce (ranks sample different shards) fails this test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from rlcyclegan.checkpoint import latest_checkpoint
from rlcyclegan.data.collect import CollectConfig, collect
from rlcyclegan.networks import load_generator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_run_on_cpu(tmp_path):
    for domain in ("sim", "real"):
        collect(CollectConfig(out=tmp_path / domain, domain=domain, episodes=2, workers=1, image_size=32,
                              max_steps=20, seed=2), progress=False)
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "-m", "rlcyclegan.cli", "--traceback", "train", "--no-progress",
        f"data.sim={tmp_path / 'sim'}", f"data.real={tmp_path / 'real'}", "data.image_size=32", "data.frame_stack=2",
        "data.batch_size=2", "model.ngf=4", "model.n_blocks=1", "model.ndf=4", "q.features_dim=8", "q.hidden_dim=8",
        "q.width=4", "iterations=3", "checkpoint_every=2", "log_every=1", "image_every=0", f"run_dir={run}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run directory:") == 1  # rank 0 alone reports (and writes)
    assert latest_checkpoint(run).name == "step_00000003"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_00000002", "step_00000003"]
    load_generator(run, "real2sim")
