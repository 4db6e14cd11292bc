"""Per-patch training targets of the synthetic scenes for the embedded default's tokenizer.

GVT's lesson, made concrete for 8 x 8 patches: a tokenizer that counts needs *fine-grained* tokens. Each object (and
the drawn string) is anchored at the patch that holds the centre of its box. Anchors are distinct: when two
overlapping objects share a centre patch, the one drawn on top keeps it and the other moves to its nearest free
patch inside its box (preferring patches its own class covers), so a scene of n objects has n anchors whenever its
boxes leave room (two objects that do not overlap, of side >= the patch, never share a centre patch):

- keep targets: 1 on anchor patches, so the selector keeps one token per object (and one for the string);
- code labels: the class (shape x colour, or "text") of the anchored object; elsewhere the class that covers the
  patch (`gvt.data.patch_labels`), so that a wrongly kept patch still has a meaningful label;
- encoder pretraining labels: one label space of `2 * NUM_PATCH_CLASSES` classes, "covered by class c" (`c`) or
  "anchor of class c" (`NUM_PATCH_CLASSES + c`), so the encoder learns both what covers a patch and where objects
  are centred (its absolute position embedding keeps the position).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .scene_rendering import patch_labels
from .scene_vocabulary import NUM_PATCH_CLASSES, TEXT_CLASS_ID, object_class_id

NUM_PRETRAIN_CLASSES = 2 * NUM_PATCH_CLASSES


@dataclass
class ScenePatchTargets:
    """Targets of a batch of scenes, each `[num_scenes, num_patches]` (int64)."""

    keep: np.ndarray
    code_labels: np.ndarray
    pretrain_labels: np.ndarray


def _patch_cells(bbox: Sequence[int], patch_size: int, grid: int) -> tuple[int, list[int]]:
    """(centre patch, the patches the box touches, nearest to the centre first) of a box, as flat indices."""
    x0, y0, x1, y1 = (int(v) for v in bbox)
    column = min(max(((x0 + x1) // 2) // patch_size, 0), grid - 1)
    row = min(max(((y0 + y1) // 2) // patch_size, 0), grid - 1)
    rows = range(max(y0 // patch_size, 0), min((y1 - 1) // patch_size, grid - 1) + 1)
    columns = range(max(x0 // patch_size, 0), min((x1 - 1) // patch_size, grid - 1) + 1)
    cells = sorted(((r - row) ** 2 + (c - column) ** 2, r * grid + c) for r in rows for c in columns)
    return row * grid + column, [cell for _, cell in cells]


def scene_patch_targets(
    objects: Sequence[Mapping[str, Any]], text_bbox: Sequence[int] | None, image_size: int, patch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keep, code_labels, pretrain_labels), each `[num_patches]`, of one scene (its `objects` and `text_bbox`
    columns). The string, then objects from the top of the drawing order down, claim their centre patch, or else
    the nearest free patch of their box (one covered by their class first); only when every patch of a box is taken
    does an object go without an anchor."""
    grid = image_size // patch_size
    coverage = patch_labels(objects, image_size, patch_size, text_bbox or None).reshape(-1)
    anchor_class = np.zeros(grid * grid, dtype=np.int64)
    if text_bbox is not None and len(text_bbox) == 4:
        anchor_class[_patch_cells(text_bbox, patch_size, grid)[0]] = TEXT_CLASS_ID
    for item in reversed(objects):
        class_id = object_class_id(item["shape"], item["colour"])
        centre, cells = _patch_cells(item["bbox"], patch_size, grid)
        free = [cell for cell in cells if anchor_class[cell] == 0]
        own = [cell for cell in free if coverage[cell] == class_id]
        if anchor_class[centre] == 0:
            anchor_class[centre] = class_id
        elif own or free:
            anchor_class[(own or free)[0]] = class_id
    keep = (anchor_class > 0).astype(np.int64)
    code_labels = np.where(keep == 1, anchor_class, coverage)
    pretrain_labels = np.where(keep == 1, NUM_PATCH_CLASSES + anchor_class, coverage)
    return keep, code_labels, pretrain_labels


def dataset_patch_targets(dataset, image_size: int, patch_size: int) -> ScenePatchTargets:
    """[`scene_patch_targets`] of every scene of a `build_synthetic_dataset` split."""
    rows = [
        scene_patch_targets(objects, text_bbox, image_size, patch_size)
        for objects, text_bbox in zip(dataset["objects"], dataset["text_bbox"])
    ]
    keep, code_labels, pretrain_labels = (np.stack(parts) for parts in zip(*rows))
    return ScenePatchTargets(keep=keep, code_labels=code_labels, pretrain_labels=pretrain_labels)


__all__ = ["NUM_PRETRAIN_CLASSES", "ScenePatchTargets", "scene_patch_targets", "dataset_patch_targets"]
