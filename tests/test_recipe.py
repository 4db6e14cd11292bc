"""The recipe of the embedded default (`recipes/default_model/train.py`, outside the wheel): a smoke-budget run writes
a complete repo that loads and generates, is deterministic per seed, counts ETT's alpha once, and refuses bad
arguments before it writes anything."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Trainer

from gvt.default_model import DEFAULT_MODEL_DIR, load_default
from gvt.tiny_random import build_tiny_random
from gvt.training import ETTCallback, GVTDataCollator, training_arguments

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes" / "default_model"


def _load_recipe():
    sys.path.insert(0, str(RECIPE_DIR))
    spec = importlib.util.spec_from_file_location("default_model_recipe", RECIPE_DIR / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the recipe's annotations through its module
    spec.loader.exec_module(module)
    return module


recipe = _load_recipe()


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "default"
    assert recipe.main(["--fast", "--seed", "3", "--output-dir", str(out)]) == 0
    return out


def test_fast_recipe_writes_a_complete_repo_that_loads_and_generates(fast_run):
    out = fast_run
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
                 "generation_config.json", "README.md", "metrics.json", "training_log.json",
                 "decoder/model_index.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.bin"))
    metrics = json.loads((out / "metrics.json").read_text())
    for branch in recipe.BRANCHES:
        for split in ("test", "test_shifted"):
            values = metrics[branch][split]
            assert 0.0 <= values["oc_accuracy"] <= 1.0 and 0.0 <= values["mci_accuracy"] <= 1.0
            assert sum(values["oc_questions_by_count"].values()) > 0
            assert set(values["oc_accuracy_by_count"]) == set(values["oc_questions_by_count"])
    validation = metrics["selection"]["validation"]
    assert set(validation) == set(recipe.BRANCHES)
    assert validation[metrics["shipped"]]["score"] == max(values["score"] for values in validation.values())
    card = (out / "README.md").read_text()
    assert metrics["shipped"] in card and "shifted test split" in card
    log = json.loads((out / "training_log.json").read_text())
    assert log["peak_memory_gb"] > 0 and log["recipe"]["seed"] == 3

    default = load_default(out)
    expected_mode = "ids" if metrics["shipped"] == "frozen_ids" else "codebook"
    assert default.model.config.image_input_mode == expected_mode
    assert default.decoder is not None and default.decoder.vision_tokenizer is default.model.vision_tokenizer
    image = np.full((112, 112, 3), 200, dtype=np.uint8)
    inputs = default.processor(images=[image], text=["How many circles are there?"], return_tensors="pt")
    output = default.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    expanded = default.model.expand_image_tokens(**inputs)
    assert torch.equal(output[:, : expanded["input_ids"].shape[1]], expanded["input_ids"])


def test_fast_recipe_is_deterministic_for_a_fixed_seed(fast_run, tmp_path):
    """Same seed, same numbers: every metric and every saved weight of two `--fast` runs are identical."""
    from safetensors.torch import load_file

    out = tmp_path / "again"
    assert recipe.main(["--fast", "--seed", "3", "--output-dir", str(out)]) == 0
    first, second = (json.loads((folder / "metrics.json").read_text()) for folder in (fast_run, out))
    for metrics in (first, second):
        metrics.pop("training_seconds"), metrics.pop("peak_memory_gb")
    assert first == second
    weights_a, weights_b = (load_file(folder / "model.safetensors") for folder in (fast_run, out))
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[key], weights_b[key]) for key in weights_a)


def test_the_ett_branch_counts_alpha_once(tmp_path):
    """The recipe trains ETT with a plain `Trainer` on the model's own loss: for one batch the loss the Trainer
    optimises is `caption + alpha * reconstruction` of one forward, with nothing added on top."""
    model, processor = build_tiny_random("codebook", seed=0, vision_config={"decoder_output_dim": 64})
    model.config.ett_reconstruction_weight = 0.25
    rows = [{"image": np.full((112, 112, 3), value, dtype=np.uint8), "prompt": "How many?", "answer": "2"}
            for value in (40, 200)]  # fmt: skip
    args = training_arguments(tmp_path, max_steps=1, per_device_train_batch_size=2, disable_tqdm=True)
    callback = ETTCallback(unfreeze_step=0, train_selector=False)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=GVTDataCollator(processor),
                      callbacks=[callback])  # fmt: skip
    callback.on_train_begin(args, trainer.state, trainer.control, model=model)  # stage 2: the tokenizer trains
    batch = GVTDataCollator(processor)(rows)
    model.train()
    loss = trainer.compute_loss(model, batch)
    out = model(**batch)
    assert out.reconstruction_loss is not None and out.reconstruction_loss > 0
    torch.testing.assert_close(loss, out.caption_loss + 0.25 * out.reconstruction_loss, rtol=0, atol=1e-6)


def test_recipe_config_holds_config_overrides():
    config = recipe.RecipeConfig()
    vision = recipe.default_vision_config(config)
    assert vision.hidden_size == config.vision_config["hidden_size"]
    assert vision.decoder_output_dim == vision.hidden_size and vision.decoder_num_queries == vision.num_patches
    parsed = recipe.parse_overrides(recipe.RecipeConfig(), ["llm_training.max_steps=800", "num_train=50"])
    assert parsed.llm_training["max_steps"] == 800 and parsed.num_train == 50
    assert recipe.RecipeConfig().llm_training["max_steps"] != 800  # defaults are not shared between instances
    with pytest.raises(SystemExit, match="unknown recipe field"):
        recipe.parse_overrides(recipe.RecipeConfig(), ["no_such_field=1"])


def test_recipe_refuses_a_non_empty_folder_before_training(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        recipe.main(["--fast", "--output-dir", str(tmp_path / "x")])
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="no shipped default in this checkout")
def test_shipped_default_was_trained_with_the_committed_recipe_defaults():
    log = json.loads((DEFAULT_MODEL_DIR / "training_log.json").read_text())
    assert log["recipe"] == json.loads(json.dumps(dataclasses.asdict(recipe.RecipeConfig())))
