"""GVTVisionTokenizer keeps the model contracts of transformers: attention implementations (eager == SDPA, switching
reaches every layer, also inside LaVIT), hidden states / attentions on request, tuples with `return_dict=False`,
input embeddings, the base-model prefix, and clear errors for wrong token-selection arguments."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoModelForImageTextToText
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import gvt.layers
import gvt.modeling_gvt
from gvt import GVTVisionConfig, GVTVisionTokenizer
from gvt.layers import GVTAttention, eager_attention_forward, key_padding_attention_mask
from gvt.modeling_gvt import GVTAttentionPool, GVTPerceiverAttention
from gvt.tiny_random import build_tiny_random

ATTENTION_CLASSES = (GVTAttention, GVTAttentionPool, GVTPerceiverAttention)


def tiny(preset: str, **overrides) -> GVTVisionTokenizer:
    torch.manual_seed(0)
    return GVTVisionTokenizer(GVTVisionConfig.from_preset(preset, **overrides)).eval()


@pytest.fixture(scope="module")
def lavit():
    return tiny("tiny")


@pytest.fixture(scope="module")
def resampler():
    return tiny("tiny-gvt")


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(3))


def attention_implementations(model: nn.Module) -> set[str]:
    return {module.config._attn_implementation for module in model.modules() if isinstance(module, ATTENTION_CLASSES)}


# -- attention implementations --------------------------------------------------------------------------------------


def test_eager_matches_sdpa_on_every_output(lavit, images):
    assert lavit.config._attn_implementation == "sdpa"
    eager = copy.deepcopy(lavit)
    eager.set_attn_implementation("eager")
    assert attention_implementations(eager) == {"eager"} and attention_implementations(lavit) == {"sdpa"}
    with torch.no_grad():
        expected, actual = lavit(images), eager(images)
        assert torch.equal(actual.keep_mask, expected.keep_mask)
        assert torch.equal(actual.token_ids, expected.token_ids)
        torch.testing.assert_close(actual.features, expected.features, atol=1e-5, rtol=1e-5)
        # Padded batches: the decoders' padding mask must mean the same thing to both kernels.
        mask = expected.attention_mask.clone()
        mask[0, mask.shape[1] // 2 :] = 0
        for decoder_type in ("highres", "lowres"):
            want = lavit.decode(expected.token_ids, mask, decoder_type=decoder_type)
            got = eager.decode(expected.token_ids, mask, decoder_type=decoder_type)
            torch.testing.assert_close(got.prompt_embeds, want.prompt_embeds, atol=1e-5, rtol=1e-5)
            if decoder_type == "highres":
                torch.testing.assert_close(got.pooled_prompt_embeds, want.pooled_prompt_embeds, atol=1e-5, rtol=1e-5)


def test_eager_matches_sdpa_gvt(resampler, images):
    eager = copy.deepcopy(resampler)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        torch.testing.assert_close(eager(images).features, resampler(images).features, atol=1e-5, rtol=1e-5)


def count_attention_calls(monkeypatch, implementation: str) -> list[str]:
    """Wrap the attention function `implementation` names; return the list its callers append their class names to."""
    calls = []
    if implementation == "eager":
        original = eager_attention_forward
    else:
        original = ALL_ATTENTION_FUNCTIONS[implementation]

    def counting(module, *args, **kwargs):
        calls.append(type(module).__name__)
        return original(module, *args, **kwargs)

    if implementation == "eager":
        monkeypatch.setattr(gvt.layers, "eager_attention_forward", counting)
        monkeypatch.setattr(gvt.modeling_gvt, "eager_attention_forward", counting)
    else:
        monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, implementation, counting)
    return calls


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attn_implementation_reaches_every_attention_layer(lavit, resampler, images, monkeypatch, implementation):
    """Every softmax attention runs the chosen kernel; the merger's policy softmax never goes through it."""
    for model in (lavit, resampler):
        model = copy.deepcopy(model)
        model.set_attn_implementation(implementation)
        calls = count_attention_calls(monkeypatch, implementation)
        config = model.config
        with torch.no_grad():
            output = model(images[:2])
            if config.is_discrete:
                for decoder_type in ("highres", "lowres"):
                    model.decode(output.token_ids, output.attention_mask, decoder_type=decoder_type)
        if config.is_discrete:
            # encoder blocks, then per decoder its self- and cross-attention per block, and the highres pool
            expected = config.num_hidden_layers + 2 * 2 * config.decoder_num_layers + 1
            assert sorted(set(calls)) == ["GVTAttention", "GVTAttentionPool"]
        else:
            expected = config.num_hidden_layers + config.resampler_num_layers
            assert sorted(set(calls)) == ["GVTAttention", "GVTPerceiverAttention"]
        assert len(calls) == expected
        monkeypatch.undo()


def test_from_pretrained_attn_implementation(lavit, tmp_path):
    lavit.save_pretrained(tmp_path)
    eager = GVTVisionTokenizer.from_pretrained(tmp_path, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager" and attention_implementations(eager) == {"eager"}
    assert attention_implementations(GVTVisionTokenizer.from_pretrained(tmp_path)) == {"sdpa"}
    with pytest.raises(ValueError, match="does not support Flash Attention"):
        GVTVisionTokenizer.from_pretrained(tmp_path, attn_implementation="flash_attention_2")


def test_composite_model_attn_implementation_reaches_the_tokenizer(tmp_path):
    model, _ = build_tiny_random()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path, attn_implementation="eager")
    assert attention_implementations(loaded.vision_tokenizer) == {"eager"}
    loaded.set_attn_implementation("sdpa")
    assert attention_implementations(loaded.vision_tokenizer) == {"sdpa"}
    loaded.set_attn_implementation({"vision_config": "eager", "text_config": "sdpa"})
    assert attention_implementations(loaded.vision_tokenizer) == {"eager"}
    assert loaded.language_model.config._attn_implementation == "sdpa"


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # the reference kernel, on purpose
def test_flex_attention_padding_mask_means_what_the_additive_mask_means():
    """flex_attention gets a BlockMask for the decoders' padding: the same weights as the release's additive -10000.
    For an image with no token at all (every key masked) the additive mask shifts all scores equally, which the block
    mask reproduces by masking nothing; the release's arithmetic rounds the shifted scores (ulp(10000) ~ 1e-3), so
    that row agrees to about 1e-3 only."""
    from torch.nn.attention.flex_attention import flex_attention

    config = GVTVisionConfig.from_preset("tiny")
    key_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(3, 2, n, 8, generator=generator) for n in (4, 5, 5))
    config._attn_implementation = "eager"
    additive = key_padding_attention_mask(config, key_mask, 4, torch.float32, config.decoder_mask_value)
    expected, _ = eager_attention_forward(nn.Module(), query, key, value, additive, scaling=8**-0.5)
    config._attn_implementation = "flex_attention"
    block_mask = key_padding_attention_mask(config, key_mask, 4, torch.float32, config.decoder_mask_value)
    assert block_mask is not None
    actual = flex_attention(query, key, value, block_mask=block_mask, scale=8**-0.5).transpose(1, 2)
    torch.testing.assert_close(actual[:2], expected[:2], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(actual[2], expected[2], atol=2e-3, rtol=2e-3)
    unmasked, _ = eager_attention_forward(nn.Module(), query[2:], key[2:], value[2:], None, scaling=8**-0.5)
    torch.testing.assert_close(actual[2:], unmasked, atol=1e-6, rtol=1e-5)
    no_padding = key_padding_attention_mask(config, torch.ones(2, 5), 4, torch.float32, -10000.0)
    assert no_padding is None


def test_flex_attention_is_accepted(lavit):
    model = copy.deepcopy(lavit)
    model.set_attn_implementation("flex_attention")
    assert attention_implementations(model) == {"flex_attention"}


# -- outputs ---------------------------------------------------------------------------------------------------------


def test_hidden_states_and_attentions_on_request(lavit, images):
    model = copy.deepcopy(lavit)
    model.set_attn_implementation("eager")
    config = model.config
    batch, patches, heads = 2, config.num_patches, config.num_attention_heads
    with torch.no_grad():
        plain = model(images[:2])
        output = model(images[:2], output_hidden_states=True, output_attentions=True)
    for name in (
        "hidden_states",
        "attentions",
        "merger_hidden_states",
        "merger_attentions",
        "merger_cross_attentions",
    ):
        assert getattr(plain, name) is None, name
    assert len(output.hidden_states) == config.num_hidden_layers + 1
    assert all(h.shape == (batch, 1 + patches, config.hidden_size) for h in output.hidden_states)
    torch.testing.assert_close(output.hidden_states[-1], output.encoder_hidden_states)
    assert len(output.attentions) == config.num_hidden_layers
    assert all(a.shape == (batch, heads, 1 + patches, 1 + patches) for a in output.attentions)
    assert len(output.merger_hidden_states) == config.merger_num_layers
    assert all(h.shape == (batch, patches, config.hidden_size) for h in output.merger_hidden_states)
    for name in ("merger_attentions", "merger_cross_attentions"):
        weights = getattr(output, name)
        assert len(weights) == config.merger_num_layers
        assert weights[0].shape == (batch, config.merger_num_attention_heads, patches, patches)
        torch.testing.assert_close(weights[0].sum(-1), torch.ones(batch, config.merger_num_attention_heads, patches))
    torch.testing.assert_close(output.features, plain.features)  # recording changes nothing

    # From the config, and a selection of encoder blocks by index.
    model.config.output_hidden_states = True
    with torch.no_grad():
        from_config = model(images[:2])
        selected = model(images[:2], output_hidden_states=[0, -1])
    model.config.output_hidden_states = False
    assert len(from_config.hidden_states) == config.num_hidden_layers + 1
    assert selected.hidden_states[1] is None and selected.hidden_states[0] is not None
    torch.testing.assert_close(selected.hidden_states[-1], output.hidden_states[-1])


def test_merger_attentions_need_no_eager_kernel(lavit, images):
    """SDPA returns no weights (as in transformers), but the merger's policy softmax always can."""
    with torch.no_grad():
        output = lavit(images[:2], output_attentions=True)
    assert output.attentions == ()
    assert len(output.merger_attentions) == lavit.config.merger_num_layers


def test_resampler_attentions(resampler, images):
    model = copy.deepcopy(resampler)
    model.set_attn_implementation("eager")
    config = model.config
    with torch.no_grad():
        output = model(images[:2], output_attentions=True, output_hidden_states=True)
    assert len(output.hidden_states) == config.num_hidden_layers + 1 and len(output.attentions) == 2
    keys = 1 + config.num_patches + config.resampler_num_latents
    shape = (2, config.resampler_num_attention_heads, config.resampler_num_latents, keys)
    assert len(output.resampler_attentions) == config.resampler_num_layers
    assert output.resampler_attentions[0].shape == shape
    assert output.merger_attentions is None and output.merger_hidden_states is None


def test_return_dict_false_gives_the_same_tuple(lavit, images):
    with torch.no_grad():
        as_dict = lavit(images[:2], output_hidden_states=True)
        as_tuple = lavit(images[:2], output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
    assert torch.equal(as_tuple[0], as_dict.encoder_hidden_states)  # the encoder output first, as vision models do
    for value, expected in zip(as_tuple, as_dict.to_tuple()):
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, expected)
        else:
            assert all(torch.equal(a, b) for a, b in zip(value, expected))

    model = copy.deepcopy(lavit)
    model.config.return_dict = False
    with torch.no_grad():
        assert isinstance(model(images[:2]), tuple)
        # The entry points keep returning their dataclasses whatever the config says.
        assert torch.equal(model.tokenize(images[:2]).token_ids, as_dict.token_ids)
        assert torch.equal(model.encode_features(images[:2]).features, as_dict.features)


def test_input_embeddings_are_the_patch_embedding(lavit):
    model = copy.deepcopy(lavit)
    assert model.get_input_embeddings() is model.encoder.patch_embedding
    assert isinstance(model.get_input_embeddings(), nn.Conv2d)
    replacement = nn.Conv2d(3, model.config.hidden_size, kernel_size=14, stride=14)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement and model.encoder.patch_embedding is replacement
    assert model.get_output_embeddings() is None


def test_tokenizer_loads_out_of_a_saved_lavit_model(tmp_path):
    """`base_model_prefix` names where composite models hold the tokenizer, so its weights load out of them."""
    model, _ = build_tiny_random()
    model.save_pretrained(tmp_path)
    tokenizer, info = GVTVisionTokenizer.from_pretrained(tmp_path, output_loading_info=True)
    assert GVTVisionTokenizer.base_model_prefix == "vision_tokenizer"
    assert info["missing_keys"] == set() or info["missing_keys"] == []
    expected = model.vision_tokenizer.state_dict()
    assert all(torch.equal(tensor, expected[name]) for name, tensor in tokenizer.state_dict().items())


# -- wrong token-selection arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"max_tokens": 2.5}, TypeError, r"max_tokens must be a non-negative int or None, got 2\.5 \(float\)"),
        ({"max_tokens": "8"}, TypeError, r"max_tokens .* got '8' \(str\)"),
        ({"max_tokens": True}, TypeError, r"max_tokens .* got True \(bool\)"),
        ({"max_tokens": -1}, ValueError, r"max_tokens must be a non-negative int or None, got -1"),
        ({"selection": "x"}, ValueError, r"selection must be 'deterministic' or 'sample', got 'x'"),
        ({"selection": None}, ValueError, r"selection must be .* got None"),
        ({"generator": 7}, TypeError, r"generator must be a torch\.Generator or None, got int"),
    ],
)
def test_wrong_selection_arguments_are_named(lavit, images, kwargs, error, match):
    with pytest.raises(error, match=match):
        lavit.tokenize(images[:1], **kwargs)
    with pytest.raises(error, match=match):
        lavit.encode_features(images[:1], **kwargs)


def test_numpy_integer_budget_and_keep_mask_checks(lavit, images):
    assert lavit.tokenize(images[:2], max_tokens=np.int64(2)).attention_mask.sum(dim=1).max() <= 2
    with pytest.raises(ValueError, match=r"keep_mask must have shape \(2, 64\), got \(2, 63\)"):
        lavit(images[:2], keep_mask=torch.ones(2, 63))
    with pytest.raises(TypeError, match="keep_mask must be a torch.Tensor"):
        lavit(images[:2], keep_mask=[[1] * 64] * 2)
    with pytest.raises(ValueError, match="gumbel_tau"):
        lavit.select_tokens(torch.zeros(1, 64, 2), "sample", gumbel_tau=0.0)


def test_gvt_tokenizer_refuses_selection_arguments(resampler, images):
    with pytest.raises(ValueError, match=r"max_tokens select LaVIT tokens; this tokenizer .* 8 latents"):
        resampler.encode_features(images[:1], max_tokens=4)
    with pytest.raises(ValueError, match="selection='sample'"):
        resampler.encode_features(images[:1], selection="sample")
