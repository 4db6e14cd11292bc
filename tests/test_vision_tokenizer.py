"""GVTVisionTokenizer behaviour: batching, sampling, budgets, persistence, training plumbing, bad input."""

import pytest
import torch
from transformers import AutoConfig, AutoModel

from gvt import GVTVisionConfig, GVTVisionTokenizer


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 112, 112, generator=generator)


def test_presets_carry_released_sizes():
    lavit = GVTVisionConfig.from_preset("lavit-7b-v2")
    assert (lavit.hidden_size, lavit.num_hidden_layers, lavit.intermediate_size) == (1408, 40, 6144)
    assert (lavit.codebook_size, lavit.codebook_dim, lavit.num_patches) == (16384, 32, 256)
    gvt = GVTVisionConfig.from_preset("gvt-eva02-l")
    assert (gvt.hidden_size, gvt.num_hidden_layers, gvt.intermediate_size) == (1024, 24, 2730)
    assert (gvt.resampler_num_latents, gvt.resampler_head_dim, gvt.encoder_rope) == (32, 96, True)
    with pytest.raises(ValueError, match="Unknown preset"):
        GVTVisionConfig.from_preset("lavit-13b")


def test_batched_equals_image_by_image(tokenizer, images):
    batched = tokenizer.tokenize(images)
    for index in range(images.shape[0]):
        single = tokenizer.tokenize(images[index : index + 1])
        count = int(single.attention_mask.sum())
        assert int(batched.attention_mask[index].sum()) == count
        assert torch.equal(batched.token_ids[index, :count], single.token_ids[0, :count])
        assert not batched.attention_mask[index, count:].any()
        assert not batched.token_ids[index, count:].any()
    with torch.no_grad():
        batched_features = tokenizer.encode_features(images)
        single_features = tokenizer.encode_features(images[1:2])
    count = int(single_features.attention_mask.sum())
    torch.testing.assert_close(batched_features.features[1, :count], single_features.features[0], atol=1e-5, rtol=1e-5)


def test_token_count_is_dynamic_and_bounded(tokenizer, images):
    output = tokenizer.tokenize(images)
    counts = output.attention_mask.sum(dim=1)
    assert output.token_ids.shape[1] == int(counts.max())
    assert (counts <= tokenizer.config.num_patches).all()
    assert ((output.token_ids >= 0) & (output.token_ids < tokenizer.config.codebook_size)).all()
    assert torch.equal(output.keep_mask.sum(dim=1), counts)


def test_sampling_is_reproducible_with_a_generator(tokenizer, images):
    first = tokenizer.tokenize(images, selection="sample", generator=torch.Generator().manual_seed(7))
    second = tokenizer.tokenize(images, selection="sample", generator=torch.Generator().manual_seed(7))
    other = tokenizer.tokenize(images, selection="sample", generator=torch.Generator().manual_seed(8))
    assert torch.equal(first.token_ids, second.token_ids)
    assert torch.equal(first.keep_mask, second.keep_mask)
    assert not torch.equal(first.keep_mask, other.keep_mask)
    with pytest.raises(ValueError, match="selection"):
        tokenizer.tokenize(images, selection="greedy")


def test_max_tokens_budget_keeps_highest_scores(tokenizer, images):
    free = tokenizer.tokenize(images)
    budget = 5
    capped = tokenizer.tokenize(images, max_tokens=budget)
    counts = capped.attention_mask.sum(dim=1)
    assert torch.equal(counts, free.attention_mask.sum(dim=1).clamp(max=budget))
    assert (capped.keep_mask <= free.keep_mask).all()  # a subset of the free selection
    keep_score = free.selector_log_probs[..., 0]
    for row in range(images.shape[0]):
        chosen = keep_score[row][capped.keep_mask[row].bool()]
        rest = keep_score[row][(free.keep_mask[row] - capped.keep_mask[row]).bool()]
        if rest.numel():
            assert chosen.min() >= rest.max()
    assert tokenizer.tokenize(images, max_tokens=0).token_ids.shape == (4, 0)


def test_zero_token_images_decode(tokenizer, images):
    with torch.no_grad():
        output = tokenizer(images[:2], keep_mask=torch.zeros(2, tokenizer.config.num_patches))
        assert output.token_ids.shape == (2, 0) and output.features.shape == (2, 0, 48)
        decoded = tokenizer.decode(output.token_ids, output.attention_mask)
    assert decoded.prompt_embeds.shape == (2, 64, 96)
    assert decoded.pooled_prompt_embeds.shape == (2, 56)
    assert torch.isfinite(decoded.prompt_embeds).all()


def test_save_load_round_trip_is_bit_exact(tokenizer, images, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), GVTVisionConfig)
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(reloaded, GVTVisionTokenizer)
    for (name, a), (_, b) in zip(tokenizer.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(tokenizer(images).features, reloaded(images).features)
    assert torch.equal(tokenizer.tokenize(images).token_ids, reloaded.tokenize(images).token_ids)


def test_gradient_checkpointing_and_straight_through_selection(images):
    torch.manual_seed(0)
    model = GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny", decoder_types=[])).train()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    output = model(images[:2], selection="sample", generator=torch.Generator().manual_seed(0))
    output.features.sum().backward()
    assert model.token_selector.in_proj.weight.grad is not None  # gradients reach the selector
    assert model.token_selector.in_proj.weight.grad.abs().sum() > 0
    assert model.encoder.layers[0].attn.q_proj.weight.grad is not None


def test_bf16_autocast_runs(tokenizer, images):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = tokenizer.tokenize(images[:2])
        decoded = tokenizer.decode(output.token_ids, output.attention_mask, decoder_type="lowres")
    assert output.token_ids.dtype == torch.long
    assert torch.isfinite(decoded.prompt_embeds.float()).all()


def test_gvt_tokenizer_resamples_to_fixed_latents(images):
    torch.manual_seed(0)
    model = GVTVisionTokenizer(GVTVisionConfig.from_preset("tiny-gvt")).eval()
    with torch.no_grad():
        output = model.encode_features(images[:3])
    assert output.features.shape == (3, 8, 48)
    assert output.attention_mask.all()
    with pytest.raises(ValueError, match="discrete"):
        model.tokenize(images[:1])


@pytest.mark.parametrize(
    "pixels, error, match",
    [
        (torch.zeros(1, 1, 112, 112), ValueError, "1 channels"),
        (torch.zeros(1, 3, 96, 96), ValueError, "96x96"),
        (torch.zeros(3, 112, 112), ValueError, "shape"),
        (torch.zeros(1, 3, 112, 112, dtype=torch.uint8), TypeError, "floating-point"),
        (torch.full((1, 3, 112, 112), float("nan")), ValueError, "NaN"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_pixel_values(tokenizer, pixels, error, match):
    with pytest.raises(error, match=match):
        tokenizer.tokenize(pixels)


def test_bad_token_ids(tokenizer):
    with pytest.raises(ValueError, match="codebook indices"):
        tokenizer.decode(torch.tensor([[0, 512]]))
    with pytest.raises(ValueError, match="codebook indices"):
        tokenizer.decode(torch.tensor([[-1, 3]]))
    with pytest.raises(ValueError, match="does not match"):
        tokenizer.decode(torch.tensor([[1, 2]]), torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        tokenizer.decode(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="no 'sdxl' decoder"):
        tokenizer.decode(torch.tensor([[1, 2]]), decoder_type="sdxl")
    # padding positions may hold anything: the mask decides
    decoded = tokenizer.decode(torch.tensor([[1, 99999]]), torch.tensor([[1, 0]]))
    assert decoded.prompt_embeds.shape == (1, 64, 96)


def test_bad_config():
    with pytest.raises(Exception, match="multiple of patch_size"):
        GVTVisionConfig.from_preset("tiny", image_size=100)
    with pytest.raises(Exception, match="decoder_types"):
        GVTVisionConfig.from_preset("tiny", decoder_types=["midres"])


@pytest.mark.parametrize("selection", ["deterministic", "sample"])
def test_inference_entry_points_equal_the_full_forward(tokenizer, images, selection):
    # tokenize skips the LLM projection and encode_features the codebook search: same results as the forward.
    def seeded():
        return torch.Generator().manual_seed(3) if selection == "sample" else None

    with torch.no_grad():
        full = tokenizer(images, selection=selection, generator=seeded(), max_tokens=20)
    tokens = tokenizer.tokenize(images, selection=selection, generator=seeded(), max_tokens=20)
    features = tokenizer.encode_features(images, selection=selection, generator=seeded(), max_tokens=20)
    for name in ("token_ids", "attention_mask", "keep_mask", "selector_log_probs"):
        assert torch.equal(getattr(tokens, name), getattr(full, name)), name
    assert torch.equal(features.attention_mask, full.attention_mask)
    torch.testing.assert_close(features.features, full.features, rtol=0, atol=1e-6)
    assert not features.features.requires_grad  # inference, like tokenize
