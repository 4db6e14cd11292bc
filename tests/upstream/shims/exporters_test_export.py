"""gvt shim for transformers' `tests/exporters/test_export.py`, which the transformers sdist does not ship.

`ModelTesterMixin` inherits `ExportTesterMixin` from here. These stand-ins contribute no tests (the export suite runs
only with the real file, see `scripts/run_upstream_suites.py --transformers-tests DIR`).
"""

GVT_SHIM = True


class ExportTesterMixin:
    """Stand-in for transformers' ExportTesterMixin (absent from the sdist): contributes no tests."""


class ExportGenerateTesterMixin(ExportTesterMixin):
    """Stand-in for transformers' ExportGenerateTesterMixin (absent from the sdist): contributes no tests."""
