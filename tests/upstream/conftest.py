"""transformers' and diffusers' own common testers run against gvt (see `upstream_suites.py` for where they come from).

When the suites cannot be had, every module here except `test_upstream_suites_available.py` is left out of the
collection and that one test fails with the reason: the run fails loudly instead of passing without them.
"""

from pathlib import Path

import pytest
import upstream_suites

UPSTREAM_MARKERS = (
    "accelerate_tests",
    "slow",
    "flash_attn_test",
    "flash_attn_3_test",
    "flash_attn_4_test",
    "torch_compile_test",
    "generate",
    "torch_export_test",
)


def pytest_configure(config):
    for marker in UPSTREAM_MARKERS:
        config.addinivalue_line("markers", f"{marker}: marker of transformers' own test suites")


def pytest_report_header(config):
    try:
        return ["upstream suites:"] + ["  " + line for line in upstream_suites.load_transformers_suites().describe()]
    except upstream_suites.UpstreamUnavailable as error:
        return [f"upstream suites: UNAVAILABLE ({str(error).splitlines()[0]})"]


def pytest_ignore_collect(collection_path, config):
    path = Path(collection_path)
    if path.suffix != ".py" or not path.name.startswith("test_") or path.name == "test_upstream_suites_available.py":
        return None
    if path.parent != Path(__file__).parent:
        return None
    try:
        upstream_suites.load_transformers_suites()
    except upstream_suites.UpstreamUnavailable:
        return True
    return None


def pytest_collection_modifyitems(config, items):
    # The project's settings ignore FutureWarning; transformers' testers assert some (`past_key_values` is deprecated).
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.filterwarnings("always::FutureWarning"))
