"""GVTVisionTokenizer in bfloat16 and float16 (loaded with `from_pretrained(dtype=...)`): every entry point runs,
what decides a token stays in float32, tokens agree with float32 on the reference fixture, and a training step works.
"""

import pytest
import torch
from diffusers import ModelMixin

from gvt import GVTVisionConfig, GVTVisionTokenizer
from gvt.conversion import build_tokenizer, load_lavit_release
from gvt.modeling_lavit_conditioning import LaVITConditioningModel
from gvt.training.tokenizer_training import TokenizerObjective

HALF_DTYPES = [torch.bfloat16, torch.float16]
FP32_PARTS = ("token_selector.", "quantizer.")


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Folders of a tiny LaVIT and a tiny GVT tokenizer saved in float32."""
    folders = {}
    for preset in ("tiny", "tiny-gvt"):
        torch.manual_seed(0)
        folders[preset] = tmp_path_factory.mktemp(preset)
        GVTVisionTokenizer(GVTVisionConfig.from_preset(preset)).save_pretrained(folders[preset])
    return folders


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["bf16", "fp16"])
def test_lavit_half_precision_keeps_decisions_in_float32(saved, images, dtype):
    model = GVTVisionTokenizer.from_pretrained(saved["tiny"], dtype=dtype).eval()
    for name, parameter in model.named_parameters():
        expected = torch.float32 if name.startswith(FP32_PARTS) else dtype
        assert parameter.dtype == expected, name
    assert model.dtype == dtype

    with torch.no_grad():
        output = model(images.to(dtype))
    assert output.selector_log_probs.dtype == torch.float32
    for name in ("encoder_hidden_states", "features", "merged_hidden_states", "quantizer_inputs", "quantized"):
        value = getattr(output, name)
        assert value.dtype == dtype, name
        assert torch.isfinite(value).all(), name

    tokens = model.tokenize(images.to(dtype))
    assert tokens.token_ids.dtype == torch.long
    assert torch.equal(tokens.token_ids, output.token_ids)
    with torch.no_grad():
        features = model.encode_features(images.to(dtype))
    assert features.features.dtype == dtype and torch.equal(features.attention_mask, tokens.attention_mask)
    assert model.embed_tokens(tokens.token_ids).dtype == dtype

    for decoder_type in ("highres", "lowres"):
        with torch.no_grad():
            decoded = model.decode(tokens.token_ids, tokens.attention_mask, decoder_type=decoder_type)
        assert decoded.prompt_embeds.dtype == dtype and torch.isfinite(decoded.prompt_embeds).all()
        if decoder_type == "highres":
            assert decoded.pooled_prompt_embeds.dtype == dtype


def test_fully_cast_model_runs(saved, images):
    """`.to(torch.bfloat16)` casts the float32 parts too; the model still runs (each part follows its weights)."""
    model = GVTVisionTokenizer.from_pretrained(saved["tiny"]).eval().to(torch.bfloat16)
    assert model.token_selector.in_proj.weight.dtype == torch.bfloat16
    tokens = model.tokenize(images.to(torch.bfloat16))
    with torch.no_grad():
        decoded = model.decode(tokens.token_ids, tokens.attention_mask, decoder_type="lowres")
    assert decoded.prompt_embeds.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["bf16", "fp16"])
def test_gvt_perceiver_half_precision(saved, images, dtype):
    model = GVTVisionTokenizer.from_pretrained(saved["tiny-gvt"], dtype=dtype).eval()
    assert all(parameter.dtype == dtype for parameter in model.parameters())
    with torch.no_grad():
        output = model(images.to(dtype))
        features = model.encode_features(images.to(dtype)).features
    assert output.resampler_hidden_states.dtype == dtype and features.dtype == dtype
    assert features.shape == (3, 8, 48) and torch.isfinite(features).all()


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("decoder_type", ["highres", "lowres"])
def test_conditioning_module_half_precision(saved, images, tmp_path, dtype, decoder_type):
    tokenizer = GVTVisionTokenizer.from_pretrained(saved["tiny"], dtype=dtype).eval()
    tokens = tokenizer.tokenize(images.to(dtype))
    conditioning = LaVITConditioningModel.from_vision_tokenizer(tokenizer, decoder_type).eval()
    assert conditioning.dtype == dtype
    with torch.no_grad():
        from_tokenizer = tokenizer.decode(tokens.token_ids, tokens.attention_mask, decoder_type=decoder_type)
        output = conditioning(tokens.token_ids, tokens.attention_mask)
    # The same weights, except the codebook rows rounded to the half dtype before the decoder sees them.
    torch.testing.assert_close(output.prompt_embeds, from_tokenizer.prompt_embeds)
    prompt, pooled, _ = conditioning.unconditional(2)
    assert prompt.dtype == dtype and (pooled is None or pooled.dtype == dtype)

    # Saved in half precision, loaded in float32 and back in half precision with diffusers' own dtype argument.
    conditioning.save_pretrained(tmp_path)
    reloaded = LaVITConditioningModel.from_pretrained(tmp_path, dtype=dtype).eval()
    assert isinstance(reloaded, ModelMixin) and reloaded.dtype == dtype
    with torch.no_grad():
        assert torch.equal(reloaded(tokens.token_ids, tokens.attention_mask).prompt_embeds, output.prompt_embeds)


def test_bf16_training_step(images, tmp_path):
    """A tiny LaVIT tokenizer training step (sampled straight-through selection, the tokenizer objective) in bf16."""
    torch.manual_seed(0)
    config = GVTVisionConfig.from_preset("tiny", decoder_output_dim=64, decoder_types=["highres"], codebook_size=64)
    GVTVisionTokenizer(config).save_pretrained(tmp_path)
    model = GVTVisionTokenizer.from_pretrained(tmp_path, dtype=torch.bfloat16).train()
    objective = TokenizerObjective(model, decoder_type="highres", target_keep_ratio=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    losses, output = objective(images.to(torch.bfloat16), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(losses.loss)
    losses.loss.backward()
    selector_grad = model.token_selector.score_head[-1].weight.grad
    assert selector_grad.dtype == torch.float32 and selector_grad.abs().sum() > 0  # straight-through, float32 part
    encoder_grad = model.encoder.layers[0].attn.q_proj.weight.grad
    assert encoder_grad.dtype == torch.bfloat16 and torch.isfinite(encoder_grad).all() and encoder_grad.abs().sum() > 0
    assert model.quantizer.codebook.weight.grad.abs().sum() > 0  # codebook loss reaches the float32 codebook
    optimizer.step()
    changed = [name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])]
    assert any(name.startswith("encoder.") for name in changed) and any(
        name.startswith(FP32_PARTS) for name in changed
    )
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())


# -- agreement with float32 on the reference fixture (benchmarks/bf16_agreement.py prints the full table) -----------


@pytest.fixture(scope="module")
def fixture_models(reference_dir, tmp_path_factory):
    reference = build_tokenizer(*load_lavit_release(reference_dir / "original", num_heads=4))
    folder = tmp_path_factory.mktemp("fixture_tokenizer")
    reference.save_pretrained(folder)
    return reference, {dtype: GVTVisionTokenizer.from_pretrained(folder, dtype=dtype).eval() for dtype in HALF_DTYPES}


# Measured on the fixture (53 float32 tokens, an AVX2 CPU): keep decisions 100% in both dtypes; ids of patches kept by
# both 94.3% in bfloat16 (92-96% across small changes of the merger's arithmetic), 100% in float16; encoder output
# relative error ~1e-2 (bf16), ~1.3e-3 (fp16). The bounds leave margin for other CPUs' kernels and rounding.
AGREEMENT_BOUNDS = {
    torch.bfloat16: {"keep": 0.97, "ids": 0.85, "encoder": 0.05},
    torch.float16: {"keep": 0.99, "ids": 0.95, "encoder": 0.01},
}


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=["bf16", "fp16"])
def test_half_precision_tokens_agree_with_float32_on_the_fixture(fixture_models, reference_io, dtype):
    reference, half = fixture_models
    pixel_values = reference_io["pixel_values"]
    with torch.no_grad():
        expected = reference(pixel_values)
        actual = half[dtype](pixel_values.to(dtype))
    bounds = AGREEMENT_BOUNDS[dtype]
    assert (actual.keep_mask == expected.keep_mask).float().mean() >= bounds["keep"]

    def ids_per_patch(output):
        ids = torch.full(output.keep_mask.shape, -1)
        ids[output.keep_mask.bool()] = output.token_ids[output.attention_mask.bool()]
        return ids

    both = (actual.keep_mask * expected.keep_mask).bool()
    assert both.sum() >= 0.9 * expected.keep_mask.sum()
    agreement = (ids_per_patch(actual)[both] == ids_per_patch(expected)[both]).float().mean()
    assert agreement >= bounds["ids"], f"{dtype}: {agreement:.2%} of ids agree with float32"
    error = (actual.encoder_hidden_states.float() - expected.encoder_hidden_states).abs().max()
    assert error <= bounds["encoder"] * expected.encoder_hidden_states.abs().max()
