"""Conversion from the released checkpoint layouts: any size, both file formats, strict keys, atomic output."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reference_layout import gvt_release_state_dict, lavit_release_state_dicts
from safetensors.torch import save_file

from gvt import GVTVisionConfig, GVTVisionTokenizer
from gvt.conversion import build_tokenizer, convert_gvt_tokenizer, load_lavit_release, load_state_dict_file

REPO = Path(__file__).resolve().parents[1]

# Deliberately unlike the fixture: other image/patch size, width, depths, heads, codebook and head widths.
OTHER_LAVIT = dict(
    image_size=64,
    patch_size=8,
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=3,
    intermediate_size=100,
    merger_num_layers=1,
    merger_num_attention_heads=3,
    merger_intermediate_size=72,
    codebook_size=100,
    codebook_dim=16,
    projection_dim=20,
    decoder_hidden_size=24,
    decoder_num_layers=1,
    decoder_num_attention_heads=3,
    decoder_intermediate_size=40,
    decoder_output_dim=30,
    decoder_num_queries=64,
    decoder_max_positions=64,
    lowres_cross_attention_dim=12,
    highres_cross_attention_dims=[12, 18],
    highres_pooled_dim=18,
)


def write_release(directory: Path, stems: dict, fmt: str) -> None:
    for stem, state_dict in stems.items():
        path = directory / f"{stem}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        state_dict = {k: v.contiguous().clone() for k, v in state_dict.items()}
        if fmt == "bin":
            torch.save(state_dict, path)
        else:
            save_file(state_dict, str(path))


@pytest.fixture(scope="module")
def other_lavit():
    torch.manual_seed(3)
    model = GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny", **OTHER_LAVIT)).eval()
    with torch.no_grad():  # make selection non-trivial: keep roughly half of the patches
        model.token_selector.score_head[4].bias.copy_(torch.tensor([0.0, 0.0]))
    return model


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_lavit_of_other_sizes_round_trips(other_lavit, tmp_path, fmt):
    write_release(tmp_path, lavit_release_state_dicts(other_lavit), fmt)
    config, state_dict = load_lavit_release(tmp_path, num_heads=3)
    for key, value in OTHER_LAVIT.items():
        assert getattr(config, key) == value, key
    converted = build_tokenizer(config, state_dict)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = other_lavit(images), converted(images)
        assert torch.equal(expected.token_ids, actual.token_ids)
        torch.testing.assert_close(actual.features, expected.features)
        for decoder_type in ("highres", "lowres"):
            a = converted.decode(actual.token_ids, actual.attention_mask, decoder_type)
            b = other_lavit.decode(expected.token_ids, expected.attention_mask, decoder_type)
            torch.testing.assert_close(a.prompt_embeds, b.prompt_embeds)


def test_gvt_of_other_sizes_round_trips(tmp_path):
    torch.manual_seed(4)
    config = GVTVisionConfig.from_preset(
        "tiny-gvt",
        image_size=56,
        hidden_size=96,
        num_attention_heads=6,
        intermediate_size=150,
        resampler_num_attention_heads=6,
        resampler_head_dim=8,
        resampler_num_latents=5,
        resampler_num_layers=3,
        projection_dim=24,
        num_hidden_layers=1,
    )
    model = GVTVisionTokenizer(config).eval()
    path = tmp_path / "gvt.pth"
    torch.save({"model": gvt_release_state_dict(model)}, path)
    converted_config, state_dict = convert_gvt_tokenizer(load_state_dict_file(path), num_heads=6)
    assert (converted_config.image_size, converted_config.resampler_head_dim) == (56, 8)
    assert converted_config.resampler_num_latents == 5
    converted = build_tokenizer(converted_config, state_dict)
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(converted(images).features, model(images).features)


def test_missing_and_unexpected_keys_are_named(other_lavit, tmp_path):
    stems = lavit_release_state_dicts(other_lavit)
    broken = {stem: dict(sd) for stem, sd in stems.items()}
    del broken["visual_tokenizer/tokenizer_encoder"]["causal_encoder.blocks.0.mlp.fc2.bias"]
    write_release(tmp_path / "missing", broken, "safetensors")
    with pytest.raises(ValueError, match=r"missing keys: \['token_merger\.layers\.0\.mlp\.fc2\.bias'\]"):
        load_lavit_release(tmp_path / "missing", num_heads=3)

    extra = {stem: dict(sd) for stem, sd in stems.items()}
    extra["visual_tokenizer/tokenizer_encoder"]["causal_encoder.extra_gate"] = torch.zeros(3)
    write_release(tmp_path / "extra", extra, "safetensors")
    with pytest.raises(
        ValueError, match=r"Unexpected keys in the tokenizer_encoder checkpoint: \['causal_encoder\.extra_gate'\]"
    ):
        load_lavit_release(tmp_path / "extra", num_heads=3)

    with pytest.raises(FileNotFoundError, match="tokenizer_encoder"):
        load_lavit_release(tmp_path / "nowhere", num_heads=3)


def test_wrong_head_count_is_refused(other_lavit, tmp_path):
    write_release(tmp_path, lavit_release_state_dicts(other_lavit), "safetensors")
    with pytest.raises(Exception, match="divisible"):
        load_lavit_release(tmp_path, num_heads=5)


class ArbitraryObject:
    """Anything but tensors in a pickle must be refused (weights_only)."""


def test_pickles_load_weights_only(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"weight": ArbitraryObject()}, path)
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_state_dict_file(path)


def run_script(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO)


def test_conversion_scripts_write_loadable_folders(reference_dir, reference_io, tmp_path):
    out = tmp_path / "lavit"
    result = run_script(
        "conversion_scripts/convert_lavit_to_hf.py",
        "--input-dir",
        str(reference_dir / "original"),
        "--output-dir",
        str(out),
        "--vision-tokenizer-only",
        "--num-heads",
        "4",
    )
    assert result.returncode == 0, result.stderr
    model = GVTVisionTokenizer.from_pretrained(out)
    tokens = model.tokenize(reference_io["pixel_values"])
    assert torch.equal(tokens.token_ids[tokens.attention_mask.bool()], reference_io["codes"])

    out = tmp_path / "gvt"
    result = run_script(
        "conversion_scripts/convert_gvt_to_hf.py",
        "--checkpoint",
        str(reference_dir / "original" / "gvt" / "gvt_checkpoint.safetensors"),
        "--output-dir",
        str(out),
        "--num-heads",
        "4",
    )
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        features = GVTVisionTokenizer.from_pretrained(out).encode_features(reference_io["pixel_values"]).features
    torch.testing.assert_close(features, reference_io["gvt_projected"], atol=1e-4, rtol=0)


def test_failed_conversion_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = run_script(
        "conversion_scripts/convert_lavit_to_hf.py",
        "--input-dir",
        str(tmp_path / "empty"),
        "--output-dir",
        str(out),
        "--vision-tokenizer-only",
    )
    assert result.returncode == 1
    assert "eva_vitg_psz14" in result.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
