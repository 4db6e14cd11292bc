"""GVTBench metrics shipped as local `evaluate` modules (nothing is fetched from the Hub).

`load_metric("object_counting" | "multiclass_identification" | "caption")` is `evaluate.load` on the module's
directory inside this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRIC_NAMES: tuple[str, ...] = ("object_counting", "multiclass_identification", "caption")
METRICS_ROOT = Path(__file__).resolve().parent


def metric_path(name: str) -> Path:
    """Directory of the `evaluate` module `name` (it holds `<name>/<name>.py`)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; expected one of {METRIC_NAMES}.")
    return METRICS_ROOT / name


def load_metric(name: str, **kwargs: Any):
    """`evaluate.load` of a packaged metric by local path; `kwargs` go to `evaluate.load`."""
    import evaluate

    return evaluate.load(str(metric_path(name)), **kwargs)


__all__ = ["METRIC_NAMES", "load_metric", "metric_path"]
