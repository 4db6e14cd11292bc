"""Shared test set-up: offline Hub, one thread, the reference fixture."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference" / "tiny_a"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE_DIR / "io.safetensors").is_file():
        pytest.skip(f"reference fixture not found at {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def reference_io(reference_dir):
    from safetensors.torch import load_file

    return load_file(str(reference_dir / "io.safetensors"))
