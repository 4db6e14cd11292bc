"""`gvt train llm` under torchrun: 2 CPU processes (gloo) x batch 2 agree with 1 process x batch 4, with DDP and with
FSDP2 (`--fsdp`), and an FSDP run resumed from its checkpoint ends at the uninterrupted run's weights."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gvt.tiny_random import save_tiny_random
from gvt.training.llm_training import main as train_main

ARGS = ["llm", "--dataset", "synthetic:16", "--max-steps", "3", "--learning-rate", "1e-3", "--no-progress"]
TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))
needs_torchrun = pytest.mark.skipif(TORCHRUN is None, reason="no torchrun")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def torchrun_train(*argv) -> None:
    """`gvt train` on 2 CPU processes under torchrun."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [TORCHRUN, "--nproc_per_node", "2", "--master_addr", "localhost", "--master_port", str(free_port())]
    command += ["-m", "gvt.training.llm_training", *map(str, argv)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def losses(path: Path) -> list[float]:
    return json.loads(path.read_text())["loss"]


@needs_torchrun
def test_two_cpu_processes_agree_with_one(tmp_path):
    two = tmp_path / "two.json"
    torchrun_train(*ARGS, "--batch-size", "2", "--output-dir", tmp_path / "two", "--result-json", two)
    one = tmp_path / "one.json"
    assert (
        train_main([*ARGS, "--batch-size", "4", "--output-dir", str(tmp_path / "one"), "--result-json", str(one)]) == 0
    )
    losses_two, losses_one = losses(two), losses(one)
    assert len(losses_one) == len(losses_two) == 3
    for a, b in zip(losses_one, losses_two):
        assert a == pytest.approx(b, rel=1e-4)
    assert losses_one[-1] < losses_one[0]


FSDP_ARGS = ["llm", "--dataset", "synthetic:16", "--max-steps", "4", "--save-steps", "2", "--learning-rate", "1e-3",
             "--no-progress"]  # fmt: skip


@needs_torchrun
def test_fsdp_on_two_cpu_processes_matches_one_process_and_resumes_to_the_same_weights(tmp_path):
    sharded, single, resumed = tmp_path / "fsdp", tmp_path / "single", tmp_path / "resumed"
    torchrun_train(*FSDP_ARGS, "--fsdp", "--batch-size", "2", "--output-dir", sharded, "--result-json", tmp_path / "f")
    assert (sharded / "checkpoint-2" / "pytorch_model_fsdp.bin").is_file()  # the sharded optimizer state's run
    assert not list(sharded.glob("_fsdp*.py"))  # the checkpoint's remote code is gvt's, not torch's FSDP module

    argv = [*FSDP_ARGS, "--batch-size", "4", "--output-dir", str(single), "--result-json", str(tmp_path / "s")]
    assert train_main(argv) == 0
    for a, b in zip(losses(tmp_path / "s"), losses(tmp_path / "f"), strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    sharded_weights, single_weights = load_file(sharded / "model.safetensors"), load_file(single / "model.safetensors")
    assert sharded_weights.keys() == single_weights.keys()
    for key in single_weights:
        torch.testing.assert_close(sharded_weights[key], single_weights[key], rtol=1e-4, atol=1e-5, msg=key)

    # interrupted after step 2: only its checkpoint is left; resumed under FSDP it ends where the whole run did. The
    # resumed run starts from other random weights (seed 1): only the checkpoint's weights can bring it there.
    other_start = save_tiny_random(tmp_path / "seed1", image_input_mode="ids", seed=1, with_decoder=False)
    resumed.mkdir()
    shutil.copytree(sharded / "checkpoint-2", resumed / "checkpoint-2")
    argv = [*FSDP_ARGS, "--fsdp", "--batch-size", "2", "--model", other_start, "--output-dir", resumed]
    torchrun_train(*argv, "--resume", "last")
    resumed_weights = load_file(resumed / "model.safetensors")
    for key in sharded_weights:
        torch.testing.assert_close(resumed_weights[key], sharded_weights[key], rtol=0, atol=1e-6, msg=key)
