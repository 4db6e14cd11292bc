"""The embedded default: the shipped weights load through the Auto classes, are safetensors only and fit the size
budget; the fine-grained supervision options of gvt.training that its recipe uses (`tests/test_recipe.py` runs the
recipe itself)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gvt.data import NUM_PATCH_CLASSES, NUM_PRETRAIN_CLASSES, TEXT_CLASS_ID, object_class_id, scene_patch_targets
from gvt.default_model import DEFAULT_MODEL_DIR
from gvt.default_model.evaluation import presence_kind

MAX_SHIPPED_BYTES = 25 * 1024 * 1024
shipped = pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="the shipped default is not in this checkout"
)


def test_scene_patch_targets_anchor_each_object_at_its_centre_patch():
    objects = [
        {"shape": "circle", "colour": "red", "bbox": [0, 0, 28, 28]},  # centre (14, 14) -> patch (1, 1)
        {"shape": "square", "colour": "blue", "bbox": [70, 84, 98, 112]},  # centre (84, 98) -> patch (7, 6)
    ]
    keep, code_labels, pretrain, object_ids = scene_patch_targets(objects, [30, 60, 50, 74], 112, 14)
    assert keep.shape == code_labels.shape == pretrain.shape == (64,)
    assert sorted(np.nonzero(keep)[0].tolist()) == [1 * 8 + 1, 4 * 8 + 2, 7 * 8 + 6]
    assert code_labels[9] == object_class_id("circle", "red")
    assert code_labels[62] == object_class_id("square", "blue")
    assert code_labels[34] == TEXT_CLASS_ID
    assert pretrain[9] == NUM_PATCH_CLASSES + object_class_id("circle", "red")
    assert pretrain[0] == object_class_id("circle", "red")  # covered, not the anchor
    assert pretrain.max() < NUM_PRETRAIN_CLASSES and keep.sum() == 3


def test_presence_kind_names_what_a_no_question_shares_with_the_scene():
    objects = [{"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "square"}]

    def kind(colour, shape, answer="no"):
        return presence_kind({"colour": colour, "shape": shape, "answer": answer}, objects)

    assert kind("red", "circle", "yes") == "yes"
    assert kind("red", "star") == "no, colour present"
    assert kind("green", "circle") == "no, shape present"
    assert kind("red", "square") == "no, colour and shape present"
    assert kind("green", "star") == "no, neither present"


@shipped
def test_shipped_default_loads_through_auto_classes_and_fits_the_budget():
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import gvt  # noqa: F401

    files = [path for path in DEFAULT_MODEL_DIR.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) <= MAX_SHIPPED_BYTES
    assert not [path for path in files if path.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert (DEFAULT_MODEL_DIR / "README.md").is_file() and (
        DEFAULT_MODEL_DIR / "decoder" / "model_index.json"
    ).is_file()
    model = AutoModelForImageTextToText.from_pretrained(DEFAULT_MODEL_DIR).eval()
    processor = AutoProcessor.from_pretrained(DEFAULT_MODEL_DIR)
    assert type(model).__name__ == "LaVITForCausalLM"
    metrics = json.loads((DEFAULT_MODEL_DIR / "metrics.json").read_text())
    assert metrics["shipped"] in ("frozen_ids", "frozen_embeddings", "ett")
    expected_mode = "ids" if metrics["shipped"] == "frozen_ids" else "codebook"
    assert model.config.image_input_mode == expected_mode
    image = np.full((112, 112, 3), 230, dtype=np.uint8)
    inputs = processor(images=[image], text=[""], return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert output.shape[0] == 1


def test_package_data_lists_the_shipped_weights():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert "default_model/weights" in text


# ------------------------------------------------------------------------------------------------------------------
# The fine-grained supervision options of gvt.training (selector keep targets, code probe)
# ------------------------------------------------------------------------------------------------------------------


def _tiny_tokenizer():
    from gvt import GVTVisionConfig, GVTVisionTokenizer

    torch.manual_seed(0)
    config = GVTVisionConfig.from_preset("tiny", decoder_output_dim=64, decoder_types=["highres"], codebook_size=32)
    return GVTVisionTokenizer(config)


def test_selector_supervision_and_code_classification_losses():
    from gvt.training.losses import code_classification_loss, selector_supervision_loss

    log_probs = torch.log(torch.tensor([[[0.9, 0.1], [0.2, 0.8]]]))
    perfect = selector_supervision_loss(log_probs, torch.tensor([[1, 0]]))
    wrong = selector_supervision_loss(log_probs, torch.tensor([[0, 1]]))
    assert perfect < wrong
    weighted = selector_supervision_loss(log_probs, torch.tensor([[1, 0]]), positive_weight=3.0)
    expected = (3 * -np.log(0.9) - np.log(0.8)) / 4
    assert torch.isclose(weighted, torch.tensor(expected, dtype=torch.float32), atol=1e-5)
    with pytest.raises(ValueError, match="keep_targets"):
        selector_supervision_loss(log_probs, torch.tensor([1, 0]))

    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0], [9.0, 0.0]]])
    loss, accuracy = code_classification_loss(logits, torch.tensor([[0, 1, 1]]), torch.tensor([[1, 1, 0]]))
    assert accuracy == 1.0 and loss < 0.01  # the padded third token (wrong) is ignored
    loss, accuracy = code_classification_loss(logits, torch.tensor([[-100, -100, 1]]), torch.tensor([[1, 1, 0]]))
    assert loss == 0 and accuracy == 0


def test_supervised_tokenizer_training_learns_the_keep_targets_and_code_classes():
    from gvt.training.tokenizer_training import TokenizerObjective, train_tokenizer

    model = _tiny_tokenizer()
    generator = torch.Generator().manual_seed(0)
    count, grid = 8, 8
    keep = torch.zeros(count, grid * grid, dtype=torch.long)
    keep[:, :8] = 1  # the top row of patches
    labels = torch.zeros(count, grid * grid, dtype=torch.long)
    pixels = torch.randn(count, 3, 1, 1, generator=generator).expand(-1, -1, 112, 112).clone()
    pixels[:, :, :14] = 2.0  # the top row looks different from the rest
    labels[:, :8] = 1 + torch.arange(count)[:, None] % 2
    pixels[::2, 0, :14] = -2.0  # class 1 vs class 2 differ in colour

    # The objective wires keep targets (teacher-forced) and code labels into the loss.
    objective = TokenizerObjective(
        model, target_keep_ratio=0.125, selector_supervision_weight=1.0, code_classification_weight=1.0,
        num_code_classes=3, teacher_forced_selection=True,
    )  # fmt: skip
    model.train()
    losses, output = objective(pixels[:2], keep_targets=keep[:2], code_labels=labels[:2])
    assert torch.equal(output.keep_mask, keep[:2].long())
    assert losses.selector_supervision > 0 and losses.code_classification > 0
    losses.loss.backward()
    assert objective.code_probe.weight.grad.abs().sum() > 0
    assert model.token_selector.score_head[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="keep_targets"):
        objective(pixels[:2])

    model = _tiny_tokenizer()
    history = train_tokenizer(
        model, pixels, num_steps=40, batch_size=8, learning_rate=3e-3, target_keep_ratio=0.125,
        keep_ratio_weight=0.0, keep_targets=keep, selector_supervision_weight=1.0, teacher_forced_selection=True,
        code_labels=labels, code_classification_weight=1.0, freeze_encoder=False, progress_bar=False,
    )  # fmt: skip
    assert history.code_probe is not None and len(history.code_accuracy) == 40
    assert history.selector_supervision[-1] < history.selector_supervision[0]
    assert history.code_accuracy[-1] > 0.9
    with torch.no_grad():
        tokens = model.tokenize(pixels)
    assert torch.equal(tokens.keep_mask, keep.long())  # the deterministic rule now keeps exactly the targets
    with pytest.raises(ValueError, match="patches per image"):
        train_tokenizer(model, pixels, num_steps=1, keep_targets=keep[:, :10], progress_bar=False)


def test_tolerance_gives_each_object_an_anchor_set_near_patch_borders():
    from gvt.data import scene_patch_targets

    objects = [
        {"shape": "circle", "colour": "red", "bbox": [0, 0, 28, 28]},  # centre (14, 14): on two borders -> 2 x 2
        {"shape": "square", "colour": "blue", "bbox": [60, 60, 80, 80]},  # centre (70, 70): 0 px past a border
        {"shape": "star", "colour": "green", "bbox": [88, 4, 108, 24]},  # centre (98, 14) -> columns 6-7, rows 0-1
        {"shape": "cross", "colour": "black", "bbox": [80, 80, 100, 100]},  # centre (90, 90): 6 px inside -> alone
    ]
    keep, code_labels, _, object_ids = scene_patch_targets(objects, None, 112, 14, tolerance=3)
    sets = {k: sorted(np.nonzero(object_ids == k)[0].tolist()) for k in range(len(objects))}
    assert sets[0] == [0, 1, 8, 9]
    assert sets[1] == [36, 37, 44, 45]
    assert sets[3] == [54]
    assert 8 * 0 + 7 in sets[2] or 8 * 1 + 7 in sets[2]
    assert (keep == (object_ids >= 0)).all()
    assert all(code_labels[cell] == object_class_id(o["shape"], o["colour"]) for k, o in enumerate(objects)
               for cell in sets[k])  # fmt: skip
    exact = scene_patch_targets(objects, None, 112, 14)
    assert exact[0].sum() == len(objects) and sorted(np.unique(exact[3][exact[3] >= 0])) == [0, 1, 2, 3]


def test_primary_token_labels_give_each_object_one_class_token():
    from gvt.training import primary_token_labels

    object_ids = torch.tensor([[0, 0, -1, 1, 1, 1], [2, -1, 2, -1, -1, -1]])
    code_labels = torch.tensor([[5, 5, 9, 7, 7, 7], [3, 4, 3, 4, 4, 4]])
    keep = torch.tensor([[1, 1, 1, 0, 1, 1], [0, 1, 1, 0, 0, 0]])
    labels = primary_token_labels(keep, object_ids, code_labels, duplicate_label=0)
    # object 0: first kept is patch 0; object 1: patch 3 dropped, so patch 4 is its first kept one; patch 2 (no
    # object) and every second token of an object get the duplicate label
    assert labels.tolist() == [[5, 0, 0, 0, 7, 0], [0, 0, 3, 0, 0, 0]]
    with pytest.raises(ValueError, match="same"):
        primary_token_labels(keep[:, :3], object_ids, code_labels)
