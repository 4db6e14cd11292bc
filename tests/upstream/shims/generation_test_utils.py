"""gvt shim for transformers' `tests/generation/test_utils.py`, which the transformers sdist does not ship.

`test_modeling_common.py` imports `GenerationTesterMixin` from here. This stand-in contributes no tests: the generation
suite runs only with the real file (`scripts/run_upstream_suites.py --transformers-tests DIR`).
"""

GVT_SHIM = True


class GenerationTesterMixin:
    """Stand-in for transformers' GenerationTesterMixin (absent from the sdist): contributes no tests."""
