"""Moved to `gvt.data.patch_targets`; re-exported here until the recipe imports it from `gvt.data`."""

from ..data.patch_targets import NUM_PRETRAIN_CLASSES, ScenePatchTargets, dataset_patch_targets, scene_patch_targets

__all__ = ["NUM_PRETRAIN_CLASSES", "ScenePatchTargets", "dataset_patch_targets", "scene_patch_targets"]
