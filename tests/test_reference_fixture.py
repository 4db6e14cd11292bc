"""The port, converted from the reference checkpoints, reproduces the reference implementation's outputs."""

import pytest
import torch

from gvt.conversion import build_tokenizer, convert_gvt_tokenizer, load_lavit_release, load_state_dict_file

ATOL = 1e-4


def assert_close(actual, expected, name):
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    error = (actual.float() - expected.float()).abs().max().item() if actual.numel() else 0.0
    assert error <= ATOL, f"{name}: max abs error {error:.3g} > {ATOL}"


@pytest.fixture(scope="module")
def lavit(reference_dir):
    return build_tokenizer(*load_lavit_release(reference_dir / "original", num_heads=4))


@pytest.fixture(scope="module")
def lavit_output(lavit, reference_io):
    with torch.no_grad():
        return lavit(reference_io["pixel_values"])


def test_encoder_and_selector(lavit_output, reference_io):
    assert_close(lavit_output.encoder_hidden_states, reference_io["encoder_hidden_states"], "encoder_hidden_states")
    assert_close(lavit_output.selector_log_probs, reference_io["selector_log_probs"], "selector_log_probs")
    assert torch.equal(lavit_output.keep_mask, reference_io["keep_mask"].long())


def test_token_counts_include_zero_token_image(lavit_output, reference_io):
    counts = lavit_output.attention_mask.sum(dim=1)
    assert counts.tolist() == reference_io["token_counts"].tolist() == [31, 22, 0]
    assert lavit_output.token_ids.shape == (3, 31)
    assert not lavit_output.attention_mask[2].any()


def test_merger_at_kept_positions(lavit_output, reference_io):
    kept = reference_io["keep_mask"].bool()
    assert_close(lavit_output.merged_hidden_states[kept], reference_io["merged"][kept], "merged")


@pytest.mark.parametrize("decision, key", [(1.0, "merged_all_kept"), (0.0, "merged_all_dropped")])
def test_merger_policy_softmax_extremes(lavit, lavit_output, reference_io, decision, key):
    patches = lavit_output.encoder_hidden_states[:, 1:]
    with torch.no_grad():
        merged = lavit.token_merger(patches, torch.full(patches.shape[:2], decision))
    assert_close(merged, reference_io[key], key)


def test_codes_quantized_and_continuous_features(lavit_output, reference_io):
    mask = lavit_output.attention_mask.bool()
    assert torch.equal(lavit_output.token_ids[mask], reference_io["codes"])
    assert_close(lavit_output.quantized[mask], reference_io["quantized"], "quantized")
    assert_close(lavit_output.features[mask], reference_io["continuous_features"], "continuous_features")


def test_public_tokenize_and_encode_features(lavit, reference_io):
    tokens = lavit.tokenize(reference_io["pixel_values"])
    assert torch.equal(tokens.token_ids[tokens.attention_mask.bool()], reference_io["codes"])
    with torch.no_grad():
        features = lavit.encode_features(reference_io["pixel_values"])
    assert_close(features.features[features.attention_mask.bool()], reference_io["continuous_features"], "features")


def test_decoders(lavit, lavit_output, reference_io):
    with torch.no_grad():
        highres = lavit.decode(lavit_output.token_ids, lavit_output.attention_mask, decoder_type="highres")
        lowres = lavit.decode(lavit_output.token_ids, lavit_output.attention_mask, decoder_type="lowres")
    assert_close(highres.prompt_embeds, reference_io["decoder_prompt_embeds"], "decoder_prompt_embeds")
    assert_close(highres.pooled_prompt_embeds, reference_io["decoder_pooled_prompt_embeds"], "pooled")
    assert_close(lowres.prompt_embeds, reference_io["lowres_decoder_embeds"], "lowres_decoder_embeds")
    assert lowres.pooled_prompt_embeds is None


def test_understanding_weights(reference_dir, reference_io):
    model = build_tokenizer(*load_lavit_release(reference_dir / "original", num_heads=4, understanding=True))
    with torch.no_grad():
        output = model.encode_features(reference_io["pixel_values"])
    assert output.attention_mask.sum(dim=1).tolist() == reference_io["token_counts_understanding"].tolist()
    mask = output.attention_mask.bool()
    assert_close(output.features[mask], reference_io["continuous_features_understanding"], "understanding")


def test_gvt_encoder_resampler_projection(reference_dir, reference_io):
    state_dict = load_state_dict_file(reference_dir / "original" / "gvt" / "gvt_checkpoint.safetensors")
    model = build_tokenizer(*convert_gvt_tokenizer(state_dict, num_heads=4))
    with torch.no_grad():
        output = model(reference_io["pixel_values"])
    assert_close(output.encoder_hidden_states, reference_io["gvt_encoder_hidden_states"], "gvt_encoder")
    assert_close(output.resampler_hidden_states, reference_io["gvt_resampler_output"], "gvt_resampler_output")
    assert_close(output.features, reference_io["gvt_projected"], "gvt_projected")
    assert output.attention_mask.all()


def test_rotary_table_matches_reference_buffer(reference_dir):
    from gvt.layers import eva_rotary_cos_sin

    state_dict = load_state_dict_file(reference_dir / "original" / "gvt" / "gvt_checkpoint.safetensors")
    cos, sin = eva_rotary_cos_sin(grid_size=8, pretrain_grid_size=16, head_dim=16, theta=10000.0)
    assert_close(cos, state_dict["visual_encoder.rope.freqs_cos"], "freqs_cos")
    assert_close(sin, state_dict["visual_encoder.rope.freqs_sin"], "freqs_sin")
