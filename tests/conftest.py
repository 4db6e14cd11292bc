"""Shared test set-up: offline Hub, one thread, the reference fixture."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REFERENCE_DIR = Path(__file__).resolve().parent / "fixtures" / "reference" / "tiny_a"
"""The public reference fixture (outputs of the original LaVIT and GVT code, see its README), shipped with the tests."""


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE_DIR / "io.safetensors").is_file():
        raise FileNotFoundError(f"The reference fixture is missing from the checkout: {REFERENCE_DIR}")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def reference_io(reference_dir):
    from safetensors.torch import load_file

    return load_file(str(reference_dir / "io.safetensors"))
