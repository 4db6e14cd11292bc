"""`gvt train llm` under torchrun: 2 CPU processes (gloo) x batch 2 agree with 1 process x batch 4."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gvt.training.llm_training import main as train_main

ARGS = ["llm", "--dataset", "synthetic:16", "--max-steps", "3", "--learning-rate", "1e-3", "--no-progress"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
def test_two_cpu_processes_agree_with_one(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    two = tmp_path / "two.json"
    command = [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_addr",
        "localhost",
        "--master_port",
        str(free_port()),
        "-m",
        "gvt.training.llm_training",
        *ARGS,
        "--batch-size",
        "2",
        "--output-dir",
        str(tmp_path / "two"),
        "--result-json",
        str(two),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    one = tmp_path / "one.json"
    assert (
        train_main([*ARGS, "--batch-size", "4", "--output-dir", str(tmp_path / "one"), "--result-json", str(one)]) == 0
    )
    losses_two = json.loads(Path(two).read_text())["loss"]
    losses_one = json.loads(Path(one).read_text())["loss"]
    assert len(losses_one) == len(losses_two) == 3
    for a, b in zip(losses_one, losses_two):
        assert a == pytest.approx(b, rel=1e-4)
    assert losses_one[-1] < losses_one[0]
