"""The recipe of gvt's embedded default: a tiny LaVIT trained from scratch on the synthetic GVTBench scenes, on the
CPU, with gvt's public training API only.

    python recipes/default_model/train.py --output-dir src/gvt/default_model/weights --overwrite   # ~30 min, 1 thread
    python recipes/default_model/train.py --fast --output-dir /tmp/smoke                            # smoke run, < 1 min
    python recipes/default_model/train.py --seed 1 --output-dir /tmp/seed1                          # another seed

Stages (seeded; each logs its numbers into `training_log.json`):

A. Encoder pretraining on per-patch scene classes (`gvt.training.pretrain_encoder_on_patch_labels`, targets from
   `gvt.data.dataset_patch_targets`): no pretrained encoder exists offline; GVT's lesson (fine-grained, patch-level
   supervision) made concrete.
B. Tokenizer (`gvt.training.train_tokenizer`): LaVIT's objective plus keep targets on each object's centre patch
   (the selector keeps what carries meaning: one token per object) and a code probe on the object's class.
C. Language model on pre-tokenized visual ids: `transformers.Trainer` + `gvt.training.GVTDataCollator` +
   `gvt.training.training_arguments` on captions, counting and presence questions (+ binding questions).
D. Three branches of the same budget from C: frozen ids (C continued); frozen codebook embeddings
   (`image_input_mode="codebook"`, `ETTCallback(train_tokenizer=False)`: projector warm-up, then projector + LLM);
   ETT (`ETTCallback(train_selector=False)`: projector warm-up, then projector + LLM + merger / quantizer / feature
   decoder under the model's own loss `L_caption + alpha * L_reconstruction`, alpha counted once). The best
   validation OC + MCI accuracy ships.
E. Decoder pipeline: tiny VAE (`gvt.training.fit_vae`) and conditioning + UNet on the tokenizer's ids
   (`gvt.training.train_decoder`).
F. Evaluation on the test and the shifted test split (`evaluate_gvtbench`), `metrics.json`, the model card, written
   atomically (`gvt.atomic_write.atomic_output_dir`).

`RecipeConfig` holds overrides of gvt's and transformers' own configs and arguments (`GVTVisionConfig`, `LlamaConfig`,
`SyntheticSceneConfig`, `TrainingArguments`, the keyword arguments of the training functions), never renamed copies.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import random
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import GenerationConfig, Trainer
from transformers.utils import logging as hf_logging

from gvt import GVTConfig, GVTImageProcessor, GVTProcessor, GVTVisionConfig, LaVITForCausalLM
from gvt.atomic_write import HF_WEIGHT_FILES, atomic_output_dir, check_output_dir
from gvt.data import (
    BACKGROUND_CLASS_ID,
    NUM_PATCH_CLASSES,
    NUM_PRETRAIN_CLASSES,
    TEXT_CLASS_ID,
    SceneObject,
    SyntheticSceneConfig,
    binding_questions_for,
    build_synthetic_dataset,
    dataset_patch_targets,
    object_class_id,
    scene_texts,
    train_text_tokenizer,
)
from gvt.default_model.evaluation import evaluate_gvtbench
from gvt.pipeline_lavit_decoder import build_tiny_decoder_pipeline, two_level_unet_config
from gvt.training import (
    ETTCallback,
    GVTDataCollator,
    evaluate_tokenizer,
    fit_vae,
    pretrain_encoder_on_patch_labels,
    train_decoder,
    train_tokenizer,
    training_arguments,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_card import write_model_card  # noqa: E402

logger = logging.getLogger("recipes.default_model")

BRANCHES = ("frozen_ids", "frozen_embeddings", "ett")
DECODER_SUBFOLDER = "decoder"
OWNED_FILES = (*HF_WEIGHT_FILES, DECODER_SUBFOLDER, "metrics.json", "training_log.json")
EVALUATED_SPLITS = ("test", "test_shifted")


@dataclass
class RecipeConfig:
    """Sizes and budgets of the recipe; the defaults make the shipped default. Dict fields are passed as keyword
    arguments to the object named in their comment."""

    seed: int = 0
    image_size: int = 112
    num_train: int = 10000
    num_validation: int = 200
    num_test: int = 300
    num_shifted: int = 300
    text_vocab_size: int = 512
    scenes: dict = field(default_factory=dict)  # gvt.data.SyntheticSceneConfig
    patch_targets: dict = field(default_factory=lambda: {"tolerance": 3})  # gvt.data.dataset_patch_targets
    vision_config: dict = field(  # gvt.GVTVisionConfig (on top of `default_vision_config`)
        default_factory=lambda: {
            "hidden_size": 96,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "intermediate_size": 384,
            "merger_num_layers": 1,
            "codebook_size": 256,
            "codebook_dim": 32,
            "decoder_hidden_size": 96,
            "decoder_num_layers": 2,
        }
    )
    text_config: dict = field(  # transformers.LlamaConfig (vocabulary and special ids are filled in)
        default_factory=lambda: {
            "hidden_size": 128,
            "intermediate_size": 352,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
        }
    )
    encoder_pretraining: dict = field(  # gvt.training.pretrain_encoder_on_patch_labels
        default_factory=lambda: {"num_steps": 4000, "batch_size": 32, "learning_rate": 2e-3, "warmup_steps": 200}
    )
    tokenizer_training: dict = field(  # gvt.training.train_tokenizer
        default_factory=lambda: {
            "num_steps": 1200,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "warmup_steps": 60,
            "keep_ratio_weight": 0.0,
            "selector_supervision_weight": 1.0,
            "keep_target_positive_weight": 1.25,
            "teacher_forced_selection": True,
            "code_classification_weight": 2.0,
            "dead_code_threshold": 50,
        }
    )
    binding_questions: int = 4  # per training scene, gvt.data.binding_questions_for
    llm_training: dict = field(  # transformers.TrainingArguments via gvt.training.training_arguments (stage C)
        default_factory=lambda: {
            "max_steps": 3000,
            "per_device_train_batch_size": 48,
            "learning_rate": 1e-3,
            "warmup_steps": 150,
        }
    )
    branch_training: dict = field(  # TrainingArguments of every branch of stage D (same budget for all)
        default_factory=lambda: {"max_steps": 480, "per_device_train_batch_size": 48, "learning_rate": 5e-4}
    )
    ett: dict = field(  # gvt.ETTCallback (ETT branch; the frozen-embeddings branch uses the same warm-up)
        default_factory=lambda: {"unfreeze_step": 80, "train_selector": False}
    )
    ett_alpha: float = 0.25  # GVTConfig.ett_reconstruction_weight
    vae: dict = field(default_factory=lambda: {"num_steps": 300, "batch_size": 16})  # gvt.training.fit_vae
    decoder_training: dict = field(  # gvt.training.train_decoder
        default_factory=lambda: {
            "num_steps": 600,
            "batch_size": 16,
            "learning_rate": 1e-3,
            "prediction_type": "v_prediction",
            "conditioning_dropout": 0.1,
        }
    )
    decoder_image_size: int = 48
    decoder_unet_width: int = 32
    eval_batch_size: int = 64
    num_threads: int = 1

    @classmethod
    def fast(cls, **overrides) -> RecipeConfig:
        """A smoke-test budget: every stage runs, in well under a minute; the numbers mean nothing."""
        small = cls(
            num_train=24,
            num_validation=4,
            num_test=6,
            num_shifted=6,
            text_vocab_size=200,
            decoder_image_size=32,
            decoder_unet_width=8,
        )
        small.vision_config.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        small.vision_config.update(codebook_size=32, decoder_hidden_size=32, decoder_num_layers=1)
        small.text_config.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        small.text_config.update(num_key_value_heads=2)
        small.encoder_pretraining.update(num_steps=3, batch_size=8, warmup_steps=0)
        small.tokenizer_training.update(num_steps=3, batch_size=8, warmup_steps=0)
        small.llm_training.update(max_steps=3, per_device_train_batch_size=8, warmup_steps=0)
        small.branch_training.update(max_steps=3, per_device_train_batch_size=8)
        small.ett.update(unfreeze_step=1)
        small.vae.update(num_steps=2, batch_size=4)
        small.decoder_training.update(num_steps=2, batch_size=4)
        return dataclasses.replace(small, **overrides)


# -- building blocks -----------------------------------------------------------------------------------------------


def default_vision_config(recipe: RecipeConfig) -> GVTVisionConfig:
    """A LaVIT tokenizer at the recipe's image size whose feature decoder maps the codes back to one encoder feature
    per patch (what ETT's reconstruction term needs)."""
    overrides = dict(recipe.vision_config)
    width = overrides.get("hidden_size", 96)
    patch_size = overrides.pop("patch_size", 14)
    num_patches = (recipe.image_size // patch_size) ** 2
    heads = overrides.get("num_attention_heads", 4)
    decoder_width = overrides.get("decoder_hidden_size", width)
    values = {
        "tokenizer_type": "lavit",
        "image_size": recipe.image_size,
        "patch_size": patch_size,
        "merger_num_attention_heads": heads,
        "merger_intermediate_size": 4 * width,
        "projection_dim": recipe.text_config.get("hidden_size", 128),
        "decoder_types": ["highres"],
        "decoder_num_attention_heads": heads,
        "decoder_intermediate_size": 2 * decoder_width,
        "decoder_output_dim": width,
        "decoder_num_queries": num_patches,
        "decoder_max_positions": num_patches,
        "lowres_cross_attention_dim": 32,
        "highres_cross_attention_dims": [32, 32],
        "highres_pooled_dim": 32,
        **overrides,
    }
    return GVTVisionConfig(**values)


def build_model(recipe: RecipeConfig, tokenizer) -> LaVITForCausalLM:
    """A fresh LaVIT in `"ids"` mode over the text vocabulary + one id per code."""
    vision = default_vision_config(recipe)
    offset = len(tokenizer)
    text = {
        "model_type": "llama",
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        **recipe.text_config,
        "vocab_size": offset + vision.codebook_size,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = GVTConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_start_token_id=tokenizer.convert_tokens_to_ids("[IMG]"),
        image_end_token_id=tokenizer.convert_tokens_to_ids("[/IMG]"),
        visual_token_offset=offset,
        image_input_mode="ids",
        ett_reconstruction_weight=recipe.ett_alpha,
    )
    model = LaVITForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=48,
        do_sample=False,
    )
    return model


def build_processor(recipe: RecipeConfig, tokenizer, model: LaVITForCausalLM) -> GVTProcessor:
    tokenizer.padding_side = "left"
    return GVTProcessor(
        image_processor=GVTImageProcessor(size={"height": recipe.image_size, "width": recipe.image_size}),
        tokenizer=tokenizer,
        visual_token_offset=model.config.visual_token_offset,
        codebook_size=model.config.vision_config.codebook_size,
    )


def pixel_values(processor: GVTProcessor, images: list, batch_size: int = 256) -> torch.Tensor:
    return torch.cat(
        [
            processor.image_processor(images[start : start + batch_size], return_tensors="pt")["pixel_values"]
            for start in range(0, len(images), batch_size)
        ]
    )


@torch.no_grad()
def tokenize_all(vision_tokenizer, pixels: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebook ids `[N, L]` (right-padded with 0) and attention mask of every image, deterministic selection."""
    vision_tokenizer.eval()
    outputs = [
        vision_tokenizer.tokenize(pixels[start : start + batch_size]) for start in range(0, len(pixels), batch_size)
    ]
    length = max(output.token_ids.shape[1] for output in outputs)
    token_ids = torch.cat([F.pad(o.token_ids, (0, length - o.token_ids.shape[1])) for o in outputs])
    attention_mask = torch.cat([F.pad(o.attention_mask, (0, length - o.attention_mask.shape[1])) for o in outputs])
    return token_ids, attention_mask


def visual_token_ids(vision_tokenizer, pixels: torch.Tensor) -> list[list[int]]:
    """The codebook ids of each image, as `gvt pretokenize` writes them."""
    token_ids, attention_mask = tokenize_all(vision_tokenizer, pixels)
    return [row[mask].tolist() for row, mask in zip(token_ids, attention_mask.bool())]


@torch.no_grad()
def class_counts_exact(vision_tokenizer, code_probe, pixels: torch.Tensor, split) -> float:
    """Share of images whose kept tokens, read by the code probe, hold each object class exactly as often as the
    scene holds objects of it (what a perfect reader of the visual tokens could count)."""
    from collections import Counter

    vision_tokenizer.eval()
    output = vision_tokenizer(pixels, selection="deterministic")
    classes = code_probe(output.quantized).argmax(-1)
    exact = 0
    for row, objects in enumerate(split["objects"]):
        truth = Counter(object_class_id(o["shape"], o["colour"]) for o in objects)
        kept = classes[row][output.attention_mask[row].bool()].tolist()
        exact += truth == Counter(c for c in kept if c not in (BACKGROUND_CLASS_ID, TEXT_CLASS_ID))
    return exact / max(len(split), 1)


def question_rows(split, binding_questions: int, seed: int) -> list[dict[str, Any]]:
    """`{"scene", "prompt", "answer"}` rows of a split: its caption (empty prompt), every counting and presence
    question, and `binding_questions` per scene about pairs sharing a colour or a shape with the scene."""
    rows = []
    columns = ["caption", "count_questions", "presence_questions", "objects", "scene_seed"]
    for scene, row in enumerate(split.select_columns(columns)):
        rows.append({"scene": scene, "prompt": "", "answer": row["caption"]})
        questions = row["count_questions"] + row["presence_questions"]
        if binding_questions:
            objects = [SceneObject.from_any(item) for item in row["objects"]]
            rng = np.random.default_rng([seed, row["scene_seed"]])
            questions += binding_questions_for(objects, rng, binding_questions)
        rows += [{"scene": scene, "prompt": q["question"], "answer": str(q["answer"])} for q in questions]
    return rows


class SceneRows(Dataset):
    """Question rows that carry their scene's image (`"image"`) or its visual ids (`"visual_token_ids"`), as
    `GVTDataCollator` reads them."""

    def __init__(self, rows: list[dict[str, Any]], column: str, values: list):
        self.rows, self.column, self.values = rows, column, values

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        return {"prompt": row["prompt"], "answer": row["answer"], self.column: self.values[row["scene"]]}


def train(model, rows: Dataset, processor, output_dir: Path, arguments: dict, seed: int, callbacks=()) -> list[float]:
    """`transformers.Trainer` with gvt's collator and training arguments; returns the logged losses."""
    args = training_arguments(
        output_dir,
        seed=seed,
        data_seed=seed,
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        logging_steps=50,
        disable_tqdm=False,
        **arguments,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=rows,
        data_collator=GVTDataCollator(processor),
        callbacks=list(callbacks),
    )
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def in_codebook_mode(model: LaVITForCausalLM, folder: Path, seed: int) -> LaVITForCausalLM:
    """`model` (saved in `folder`) reloaded with `image_input_mode="codebook"`: a fresh MLP projector reads the
    codebook embeddings."""
    torch.manual_seed(seed)
    branch = LaVITForCausalLM.from_pretrained(folder, image_input_mode="codebook", dtype=torch.float32)
    branch.generation_config = copy.deepcopy(model.generation_config)
    return branch


def train_decoder_pipeline(recipe: RecipeConfig, vision_tokenizer, images: list, pixels: torch.Tensor):
    """Stage E: a tiny decoder pipeline around the final tokenizer, trained on its ids."""
    from diffusers import UNet2DConditionModel

    size = recipe.decoder_image_size
    pipeline = build_tiny_decoder_pipeline(
        vision_tokenizer, decoder_type="highres", seed=recipe.seed, sample_size=size // 2
    )
    pipeline.register_to_config(
        image_mean=list(GVTImageProcessor.image_mean), image_std=list(GVTImageProcessor.image_std)
    )
    if recipe.decoder_unet_width:
        torch.manual_seed(recipe.seed)
        unet = two_level_unet_config(pipeline.conditioning, size // 2, recipe.decoder_unet_width)
        pipeline.register_modules(unet=UNet2DConditionModel(**unet))
    pixels_01 = torch.stack(
        [torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1) for image in images]
    )
    small = F.interpolate(pixels_01, size=size, mode="bilinear", antialias=True) * 2 - 1
    vae_losses = fit_vae(pipeline.vae, small, seed=recipe.seed, progress_bar=True, **recipe.vae)
    token_ids, attention_mask = tokenize_all(vision_tokenizer, pixels)
    history = train_decoder(
        pipeline, small, token_ids, attention_mask, seed=recipe.seed, progress_bar=True, **recipe.decoder_training
    )
    pipeline.register_modules(vision_tokenizer=None)  # saved with the model; `load_default` passes it back in
    window = max(1, min(20, len(history.losses)))
    return pipeline, {
        "vae_loss_first": vae_losses[0],
        "vae_loss_last": vae_losses[-1],
        "unet_loss_first": float(np.mean(history.losses[:window])),
        "unet_loss_last": float(np.mean(history.losses[-window:])),
    }


SCALARS = ("oc_accuracy", "oc_mae", "mci_accuracy", "caption_cider", "caption_bleu", "mean_visual_tokens")


def summary(results: dict) -> dict:
    """The scalar metrics of an `evaluate_gvtbench` result, plus OC accuracy per true count."""
    values = {key: round(float(results[key]), 4) for key in SCALARS}
    values["oc_accuracy_by_count"] = {k: round(v, 3) for k, v in results["oc_accuracy_by_count"].items()}
    values["oc_mean_answer_by_count"] = {k: round(v, 2) for k, v in results["oc_mean_answer_by_count"].items()}
    values["oc_questions_by_count"] = results["oc_questions_by_count"]
    return values


# -- the recipe ----------------------------------------------------------------------------------------------------


class Log:
    def __init__(self, recipe: RecipeConfig):
        self.values: dict[str, Any] = {"recipe": dataclasses.asdict(recipe), "stages": {}}
        self.started = time.perf_counter()

    def stage(self, name: str, start: float, **values) -> None:
        values["seconds"] = round(time.perf_counter() - start, 1)
        self.values["stages"][name] = values
        print(f"[recipe] {name}: {json.dumps(values, default=float)[:800]}", flush=True)


def run_recipe(recipe: RecipeConfig, output_dir: str, overwrite: bool = False) -> dict:
    """Run stages A-F; write a complete `save_pretrained` repo (+ `decoder/`, `metrics.json`, `training_log.json`,
    model card) to `output_dir`. Returns the training log."""
    check_output_dir(output_dir, overwrite=overwrite, owns=OWNED_FILES)
    torch.set_num_threads(recipe.num_threads)
    random.seed(recipe.seed)
    np.random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    log = Log(recipe)
    with tempfile.TemporaryDirectory(prefix="gvt-recipe-") as scratch_dir:
        scratch = Path(scratch_dir)

        # -- data --------------------------------------------------------------------------------------------------
        start = time.perf_counter()
        dataset = build_synthetic_dataset(
            recipe.num_train, recipe.num_validation, recipe.num_test, recipe.image_size, recipe.seed,
            SyntheticSceneConfig(**recipe.scenes), num_shifted=recipe.num_shifted,
        )  # fmt: skip
        text_tokenizer = train_text_tokenizer(scene_texts(dataset["train"]), vocab_size=recipe.text_vocab_size)
        model = build_model(recipe, text_tokenizer)
        processor = build_processor(recipe, text_tokenizer, model)
        vision = model.vision_tokenizer
        images = [image.convert("RGB") for image in dataset["train"]["image"]]
        pixels = pixel_values(processor, images)
        validation_pixels = pixel_values(processor, [i.convert("RGB") for i in dataset["validation"]["image"]])
        patch_size = vision.config.patch_size
        targets = dataset_patch_targets(dataset["train"], recipe.image_size, patch_size, **recipe.patch_targets)
        validation_targets = dataset_patch_targets(dataset["validation"], recipe.image_size, patch_size)
        log.stage("data", start, scenes={k: len(v) for k, v in dataset.items()}, text_vocab=len(text_tokenizer),
                  anchors_per_image=float(targets.keep.sum(1).mean()))  # fmt: skip

        # -- A: encoder pretraining on per-patch classes -----------------------------------------------------------
        start = time.perf_counter()
        pretraining = pretrain_encoder_on_patch_labels(
            vision, pixels, torch.from_numpy(targets.pretrain_labels), num_classes=NUM_PRETRAIN_CLASSES,
            lr_scheduler_type="cosine", seed=recipe.seed, **recipe.encoder_pretraining,
        )  # fmt: skip
        window = max(1, min(25, len(pretraining.losses)))
        log.stage("A_encoder_pretraining", start, loss=float(np.mean(pretraining.losses[-window:])),
                  patch_accuracy=float(np.mean(pretraining.accuracies[-window:])))  # fmt: skip

        # -- B: tokenizer --------------------------------------------------------------------------------------------
        start = time.perf_counter()
        history = train_tokenizer(
            vision, pixels, target_keep_ratio=float(targets.keep.mean()),
            keep_targets=torch.from_numpy(targets.keep), code_labels=torch.from_numpy(targets.code_labels),
            object_ids=torch.from_numpy(targets.object_ids) if recipe.patch_targets.get("tolerance") else None,
            num_code_classes=NUM_PATCH_CLASSES, lr_scheduler_type="cosine", seed=recipe.seed,
            **recipe.tokenizer_training,
        )  # fmt: skip
        evaluation = evaluate_tokenizer(vision, validation_pixels)
        tokens = np.array([len(codes) for codes in visual_token_ids(vision, validation_pixels)])
        anchors = validation_targets.keep.sum(1)
        window = max(1, min(25, len(history.code_accuracy)))
        log.stage(
            "B_tokenizer", start, reconstruction=evaluation.reconstruction, codebook_usage=evaluation.codebook_usage,
            tokens_per_image=evaluation.tokens_per_image, anchors_per_image=float(anchors.mean()),
            token_count_equals_anchor_count=float((tokens == anchors).mean()),
            train_code_accuracy=float(np.mean(history.code_accuracy[-window:])),
            class_counts_exact=class_counts_exact(vision, history.code_probe, validation_pixels, dataset["validation"]),
        )  # fmt: skip

        # -- C: language model on visual ids -------------------------------------------------------------------------
        start = time.perf_counter()
        rows = question_rows(dataset["train"], recipe.binding_questions, recipe.seed)
        id_rows = SceneRows(rows, "visual_token_ids", visual_token_ids(vision, pixels))
        image_rows = SceneRows(rows, "image", images)
        model.requires_grad_(False)
        model.language_model.requires_grad_(True)
        losses = train(model, id_rows, processor, scratch / "C", recipe.llm_training, recipe.seed)
        log.stage("C_llm_ids", start, sequences=len(rows), first_loss=losses[:1], last_loss=losses[-1:])
        model.save_pretrained(scratch / "C_model")

        # -- D: three branches of the same budget ----------------------------------------------------------------------
        validation_scores: dict[str, dict] = {}
        results: dict[str, dict[str, dict]] = {}

        def score(name: str, branch: LaVITForCausalLM) -> dict:
            branch.eval()
            found = evaluate_gvtbench(branch, processor, dataset["validation"], batch_size=recipe.eval_batch_size)
            validation_scores[name] = {
                "oc_accuracy": round(found["oc_accuracy"], 4),
                "mci_accuracy": round(found["mci_accuracy"], 4),
                "score": round(found["oc_accuracy"] + found["mci_accuracy"], 4),
            }
            results[name] = {
                split: summary(evaluate_gvtbench(branch, processor, dataset[split], batch_size=recipe.eval_batch_size))
                for split in EVALUATED_SPLITS
            }
            return {"validation": validation_scores[name], **{s: results[name][s] for s in EVALUATED_SPLITS}}

        start = time.perf_counter()
        train(model, id_rows, processor, scratch / "D_ids", recipe.branch_training, recipe.seed)
        log.stage("D_frozen_ids", start, **score("frozen_ids", model))
        branches = {"frozen_ids": model}

        start = time.perf_counter()
        frozen = in_codebook_mode(model, scratch / "C_model", recipe.seed)
        callback = ETTCallback(**{**recipe.ett, "train_tokenizer": False})
        train(frozen, id_rows, processor, scratch / "D_embeddings", recipe.branch_training, recipe.seed, [callback])
        log.stage("D_frozen_embeddings", start, **score("frozen_embeddings", frozen))
        branches["frozen_embeddings"] = frozen

        start = time.perf_counter()
        ett = in_codebook_mode(model, scratch / "C_model", recipe.seed)
        ett.vision_tokenizer.encoder.eval()
        losses = train(ett, image_rows, processor, scratch / "D_ett", recipe.branch_training, recipe.seed,
                       [ETTCallback(**recipe.ett)])  # fmt: skip
        tuned = evaluate_tokenizer(ett.vision_tokenizer, validation_pixels)
        log.stage("D_ett", start, **score("ett", ett), reconstruction=tuned.reconstruction,
                  tokens_per_image=tuned.tokens_per_image, last_loss=losses[-1:])  # fmt: skip
        branches["ett"] = ett

        # the best validation OC + MCI accuracy ships; ties go to the simpler branch
        shipped = max(BRANCHES, key=lambda name: (validation_scores[name]["score"], -BRANCHES.index(name)))
        final = branches[shipped]
        final.requires_grad_(True)
        final.eval()

        # -- E: decoder pipeline ---------------------------------------------------------------------------------------
        start = time.perf_counter()
        pipeline, decoder_log = train_decoder_pipeline(recipe, final.vision_tokenizer, images, pixels)
        log.stage("E_decoder", start, **decoder_log)

        # -- F: save -------------------------------------------------------------------------------------------------
        log.values["training_seconds"] = round(time.perf_counter() - log.started, 1)
        log.values["peak_memory_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        metrics = {
            "shipped": shipped,
            "selection": {
                "criterion": "validation oc_accuracy + mci_accuracy",
                "num_validation_scenes": len(dataset["validation"]),
                "validation": validation_scores,
            },
            "num_scenes": {split: len(dataset[split]) for split in EVALUATED_SPLITS},
            **results,
            "fixed_token_baselines": {"lavit_fixed_grid": (recipe.image_size // patch_size) ** 2, "lavit_224px": 256},
            "training_seconds": log.values["training_seconds"],
            "peak_memory_gb": log.values["peak_memory_gb"],
        }
        with atomic_output_dir(output_dir, overwrite=overwrite, owns=OWNED_FILES) as staging:
            final.save_pretrained(staging)
            processor.save_pretrained(staging)
            pipeline.save_pretrained(staging / DECODER_SUBFOLDER)
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
            (staging / "training_log.json").write_text(json.dumps(log.values, indent=1, default=float))
            write_model_card(staging, metrics, log.values)
    print(f"[recipe] wrote {output_dir} in {log.values['training_seconds']:.0f} s, peak memory "
          f"{log.values['peak_memory_gb']} GB", flush=True)  # fmt: skip
    return log.values


def parse_overrides(recipe: RecipeConfig, items: list[str]) -> RecipeConfig:
    """`FIELD=VALUE` (JSON values) or `FIELD.KEY=VALUE` for the dict fields, e.g. `llm_training.max_steps=800`."""
    fields = {f.name for f in dataclasses.fields(RecipeConfig)}
    for item in items:
        name, _, value = item.partition("=")
        name, _, key = name.partition(".")
        if name not in fields:
            raise SystemExit(f"unknown recipe field {name!r}; fields: {sorted(fields)}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        if key:
            getattr(recipe, name)[key] = parsed
        else:
            setattr(recipe, name, parsed)
    return recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, help="where to write the repo folder")
    parser.add_argument("--fast", action="store_true", help="a smoke-test budget (under a minute)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace the model files of a non-empty folder")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the recipe's, 1)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override recipe fields")
    args = parser.parse_args(argv)
    recipe = RecipeConfig.fast(seed=args.seed) if args.fast else RecipeConfig(seed=args.seed)
    recipe = parse_overrides(recipe, args.set)
    if args.threads is not None:
        recipe.num_threads = args.threads
    hf_logging.set_verbosity_warning()
    run_recipe(recipe, args.output_dir, overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
