"""`gvt demo`, `gvt caption`, `gvt tokenize` and `gvt reconstruct` on the embedded default (or, in a checkout without
the shipped weights, on a smoke-budget default trained here)."""

import json

import numpy as np
import pytest
from PIL import Image

from gvt.cli import main
from gvt.default_model import DEFAULT_MODEL_DIR


@pytest.fixture(scope="module")
def model_args(tmp_path_factory):
    """`[]` for the shipped default; `["--model", folder]` for a freshly trained smoke default otherwise."""
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return []
    from test_recipe import recipe

    folder = tmp_path_factory.mktemp("default") / "repo"
    assert recipe.main(["--fast", "--output-dir", str(folder)]) == 0
    return ["--model", str(folder)]


@pytest.fixture(scope="module")
def user_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    scene = np.full((90, 140, 3), 235, dtype=np.uint8)
    scene[20:60, 30:70] = (220, 30, 35)
    scene[40:80, 90:120] = (35, 75, 220)
    paths = {}
    paths["gray"] = folder / "gray.png"
    Image.fromarray(scene.mean(axis=2).astype(np.uint8), mode="L").save(paths["gray"])
    paths["rgba"] = folder / "rgba.png"
    alpha = np.full((90, 140, 1), 255, dtype=np.uint8)
    alpha[:10] = 0
    Image.fromarray(np.concatenate([scene, alpha], axis=2), mode="RGBA").save(paths["rgba"])
    paths["exif"] = folder / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(scene).save(paths["exif"], format="JPEG", exif=exif.tobytes())
    paths["corrupt"] = folder / "corrupt.png"
    paths["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
    return paths


def test_demo_writes_metrics_json_and_picture(model_args, tmp_path, capsys):
    out_json, picture = tmp_path / "metrics.json", tmp_path / "demo.png"
    code = main(["demo", *model_args, "--num-scenes", "6", "--json", str(out_json), "--picture", str(picture)])
    assert code == 0
    metrics = json.loads(out_json.read_text())
    for key in ("oc_accuracy", "oc_mae", "mci_accuracy", "caption_cider", "mean_visual_tokens", "seconds"):
        assert isinstance(metrics[key], float), key
    assert 0.0 <= metrics["oc_accuracy"] <= 1.0 and 0.0 <= metrics["mci_accuracy"] <= 1.0
    assert metrics["oc_mae"] >= 0.0 and metrics["caption_cider"] >= 0.0 and metrics["seconds"] > 0.0
    assert 0.0 <= metrics["mean_visual_tokens"] <= 64.0
    assert all(0.0 <= value <= 1.0 for value in metrics["oc_accuracy_by_count"].values())
    with Image.open(picture) as image:
        assert image.width > 3 * 112 and image.height > 112
    printed = capsys.readouterr().out
    assert "OC accuracy" in printed and "MCI accuracy" in printed and "caption CIDEr" in printed


@pytest.mark.parametrize("kind", ["gray", "rgba", "exif"])
def test_caption_reads_any_user_image(model_args, user_images, kind, capsys):
    assert main(["caption", str(user_images[kind]), *model_args, "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["image"] == str(user_images[kind]) and isinstance(result["text"], str)


def test_caption_answers_a_question(model_args, user_images, capsys):
    assert main(["caption", str(user_images["gray"]), *model_args, "--prompt", "How many squares are there?"]) == 0
    assert str(user_images["gray"]) in capsys.readouterr().out


def test_caption_rejects_a_corrupt_file_clearly(model_args, user_images, tmp_path, capsys):
    assert main(["caption", str(user_images["corrupt"]), *model_args]) == 2
    error = capsys.readouterr().err
    assert "corrupt.png" in error and "error" in error
    assert main(["caption", str(tmp_path / "missing.png"), *model_args]) == 2


def test_tokenize_and_reconstruct_use_the_default(model_args, user_images, tmp_path, capsys):
    assert main(["tokenize", str(user_images["rgba"]), *model_args, "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["num_patches"] == 64 and len(item["token_ids"]) == item["num_tokens"]
    out = tmp_path / "reconstructions"
    code = main(["reconstruct", str(user_images["exif"]), *model_args, "--out", str(out), "--steps", "2"])
    assert code == 0
    assert (out / "rotated_reconstruction.png").is_file()
