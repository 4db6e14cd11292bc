"""The synthetic GVTBench-style scenes: generator, dataset builder, flat views, patch labels, text vocabulary."""

from .patch_targets import NUM_PRETRAIN_CLASSES, ScenePatchTargets, dataset_patch_targets, scene_patch_targets
from .scene_language import binding_questions_for
from .scene_layout import (
    SceneBackground,
    SceneLayout,
    SceneObject,
    SceneText,
    SyntheticSceneConfig,
    visible_object_colours,
)
from .scene_rendering import patch_labels, patch_labels_from_mask, render_label_mask
from .scene_vocabulary import (
    BACKGROUND_CLASS_ID,
    BACKGROUND_COLOURS,
    DARK_BACKGROUND_COLOURS,
    NUM_PATCH_CLASSES,
    OBJECT_COLOURS,
    SHAPE_NAMES,
    TEXT_CLASS_ID,
    object_class_id,
    patch_class_names,
)
from .synthetic_scenes import (
    DEFAULT_IMAGE_SIZE,
    SHIFTED_SCENE_CONFIG,
    SHIFTED_SPLIT,
    SPLIT_NAMES,
    SYNTHETIC_SCENE_FEATURES,
    SyntheticScene,
    build_synthetic_dataset,
    generate_scene,
    scene_seed_for,
    scene_texts,
    to_caption_rows,
    to_qa_rows,
)
from .text_tokenizer import DEFAULT_SPECIAL_TOKENS, train_text_tokenizer

__all__ = [
    "BACKGROUND_CLASS_ID",
    "BACKGROUND_COLOURS",
    "DARK_BACKGROUND_COLOURS",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_SPECIAL_TOKENS",
    "NUM_PATCH_CLASSES",
    "NUM_PRETRAIN_CLASSES",
    "OBJECT_COLOURS",
    "SHAPE_NAMES",
    "SHIFTED_SCENE_CONFIG",
    "SHIFTED_SPLIT",
    "SPLIT_NAMES",
    "SYNTHETIC_SCENE_FEATURES",
    "TEXT_CLASS_ID",
    "SceneBackground",
    "SceneLayout",
    "SceneObject",
    "ScenePatchTargets",
    "SceneText",
    "SyntheticScene",
    "SyntheticSceneConfig",
    "binding_questions_for",
    "build_synthetic_dataset",
    "dataset_patch_targets",
    "generate_scene",
    "object_class_id",
    "patch_class_names",
    "patch_labels",
    "patch_labels_from_mask",
    "render_label_mask",
    "scene_patch_targets",
    "scene_seed_for",
    "scene_texts",
    "to_caption_rows",
    "to_qa_rows",
    "train_text_tokenizer",
    "visible_object_colours",
]
