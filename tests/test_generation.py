"""LaVITForCausalLM keeps the contracts of a transformers decoder-only model over one sequence the caller can see:
images are expanded before positions are assigned, so ids, masks, positions, cache, returned sequences, hidden states
and attentions all cover the same length, and every generation strategy of `generate` works in every input mode."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gvt.modeling_lavit import CACHE_ARGUMENT
from gvt.tiny_random import build_tiny_random

torch.set_num_threads(1)

MODES = ["ids", "features", "codebook"]
NEW = 6


@functools.cache
def tiny(mode: str):
    return build_tiny_random(image_input_mode=mode, seed=0)


def noise_image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8))


def flat_image() -> Image.Image:
    return Image.new("RGB", (64, 64), (200, 30, 30))


def prompt(mode: str):
    model, processor = tiny(mode)
    return model, processor, processor(images=noise_image(), text="describe the image", return_tensors="pt")


def greedy(model, inputs, new_tokens: int = NEW, **kwargs):
    return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, **kwargs)


def image_token_count(model, pixel_values) -> int:
    return int(model.get_image_features(pixel_values).image_attention_mask.sum())


def placeholder_expanded(model, inputs) -> torch.Tensor:
    """`<s> [IMG] <image> x count [/IMG] text` built by hand (the "features"-style expanded form of one image)."""
    ids = inputs["input_ids"]
    count = image_token_count(model, inputs["pixel_values"])
    return torch.cat((ids[:, :2], torch.full((1, count), model.config.image_token_id), ids[:, 3:]), dim=1)


# ------------------------------------------------------------------------------------------------------------------
# The expanded sequence
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_expand_image_tokens_gives_the_sequence_generate_returns(mode):
    model, processor, inputs = prompt(mode)
    count = image_token_count(model, inputs["pixel_values"])
    with torch.no_grad():
        expanded = model.expand_image_tokens(**inputs)
        output = greedy(model, inputs)
    ids = expanded["input_ids"]
    assert ids.shape[1] == inputs["input_ids"].shape[1] - 1 + count
    assert torch.equal(output[:, : ids.shape[1]], ids)
    image_positions = ids[0, 2 : 2 + count]
    if mode == "features":  # placeholders once per token, the pixels still needed
        assert bool((image_positions == model.config.image_token_id).all())
        assert torch.equal(expanded["pixel_values"], inputs["pixel_values"])
    else:  # the visual ids carry the image: no placeholder, no pixels
        assert bool(model.vocabulary.is_visual(image_positions).all())
        assert "pixel_values" not in expanded
    again = model.expand_image_tokens(**expanded)  # already expanded: unchanged
    assert torch.equal(again["input_ids"], ids) and torch.equal(again["attention_mask"], expanded["attention_mask"])
    # the decoded expanded prompt equals the decoded collapsed prompt (what the pipelines strip)
    assert processor.batch_decode(ids, skip_special_tokens=True) == processor.batch_decode(
        inputs["input_ids"], skip_special_tokens=True
    )


@pytest.mark.parametrize("mode", MODES)
def test_forward_on_expanded_input_keeps_its_length_and_equals_collapsed(mode):
    model, _, inputs = prompt(mode)
    with torch.no_grad():
        collapsed = model(**inputs)
        expanded = model.expand_image_tokens(**inputs)
        out = model(**expanded)
        placeholders = model(input_ids=placeholder_expanded(model, inputs), pixel_values=inputs["pixel_values"])
    length = expanded["input_ids"].shape[1]
    assert out.logits.shape[1] == collapsed.logits.shape[1] == placeholders.logits.shape[1] == length
    torch.testing.assert_close(out.logits, collapsed.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(placeholders.logits, collapsed.logits, atol=1e-5, rtol=0)
    assert torch.equal(collapsed.expanded_input_ids, expanded["input_ids"])
    assert len(collapsed.image_outputs.pooler_output) == 1
    assert collapsed.image_outputs.pooler_output[0].shape == (
        image_token_count(model, inputs["pixel_values"]),
        model.config.text_config.hidden_size,
    )


def test_hidden_states_and_attentions_cover_the_input_length():
    model, processor = build_tiny_random("features", seed=0)
    model.language_model.set_attn_implementation("eager")  # attention weights come from eager attention
    inputs = processor(images=[noise_image(), flat_image()], text=["describe", "what color ?"], return_tensors="pt")
    with torch.no_grad():
        expanded = model.expand_image_tokens(**inputs)
        out = model(**expanded, output_hidden_states=True, output_attentions=True)
    batch, length = expanded["input_ids"].shape
    layers = model.config.text_config.num_hidden_layers
    assert len(out.hidden_states) == layers + 1 and len(out.attentions) == layers
    assert all(hidden.shape[:2] == (batch, length) for hidden in out.hidden_states)
    assert all(attention.shape[-2:] == (length, length) for attention in out.attentions)
    assert out.logits.shape[:2] == (batch, length)


def test_return_dict_false_gives_tuples():
    model, _, inputs = prompt("ids")
    with torch.no_grad():
        out = model(**inputs, labels=inputs["input_ids"])
        as_tuple = model(**inputs, labels=inputs["input_ids"], return_dict=False)
        features = model.get_image_features(inputs["pixel_values"], return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.loss)
    torch.testing.assert_close(as_tuple[1], out.logits)
    assert isinstance(features, tuple)


def test_label_free_batch_has_a_zero_loss_not_nan():
    model, _, inputs = prompt("ids")
    labels = torch.full_like(inputs["input_ids"], -100)
    with torch.no_grad():
        out = model(**inputs, labels=labels)
        summed = model(**inputs, labels=labels, num_items_in_batch=torch.tensor(0))
    assert out.loss.item() == 0.0 and summed.loss.item() == 0.0


def test_model_plumbing():
    model, _ = tiny("ids")
    assert model.base_model_prefix == "language_model" and model.base_model is model.language_model
    assert model.get_input_embeddings() is model.language_model.get_input_embeddings()
    replacement = torch.nn.Embedding(*model.get_input_embeddings().weight.shape)
    other, _ = build_tiny_random("ids", seed=1)
    other.set_input_embeddings(replacement)
    assert other.get_input_embeddings() is replacement and other.embed_input_ids(torch.tensor([[1]])).shape[-1] == 48


def test_a_causal_lm_checkpoint_loads_into_the_language_model(tmp_path):
    """`base_model_prefix` names the language model: a plain causal-LM checkpoint fills `language_model.*`."""
    source, _ = build_tiny_random("ids", seed=3)
    source.language_model.save_pretrained(tmp_path)
    model = type(source).from_pretrained(tmp_path, config=source.config)
    for name, tensor in source.language_model.state_dict().items():
        assert torch.equal(model.language_model.state_dict()[name], tensor), name


@pytest.mark.parametrize("mode", MODES)
def test_a_new_image_after_a_filled_cache_enters_at_its_placeholder(mode):
    """A second turn with its own image, on top of the first turn's cache, equals one forward over both turns."""
    model, processor, first = prompt(mode)
    second = processor(images=flat_image(), text="and this one ?", return_tensors="pt")
    with torch.no_grad():
        turn = model(**first, use_cache=True)
        past_ids = turn.expanded_input_ids
        mask = torch.ones(1, past_ids.shape[1] + second["input_ids"].shape[1], dtype=torch.long)
        cache = getattr(turn, CACHE_ARGUMENT)
        step = model(**{**second, "attention_mask": mask}, **{CACHE_ARGUMENT: cache})
        # the first turn's image is in its expanded ids ("ids", "codebook") or needs its pixels again ("features")
        pixels = [first["pixel_values"]] if mode == "features" else []
        both = model(
            input_ids=torch.cat((past_ids, second["input_ids"]), dim=1),
            pixel_values=torch.cat((*pixels, second["pixel_values"])),
        )
    length = step.expanded_input_ids.shape[1]
    assert step.logits.shape[1] == length
    torch.testing.assert_close(step.logits, both.logits[:, -length:], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# Generation strategies
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_generation_continues_from_its_own_output(mode):
    model, _, inputs = prompt(mode)
    with torch.no_grad():
        whole = greedy(model, inputs, 2 * NEW)
        first = greedy(model, inputs)
        pixels = {"pixel_values": inputs["pixel_values"]} if mode == "features" else {}
        continued = greedy(model, {"input_ids": first, "attention_mask": torch.ones_like(first), **pixels})
    assert torch.equal(continued, whole)


@pytest.mark.parametrize("mode", MODES)
def test_assisted_and_prompt_lookup_decoding_equal_greedy(mode):
    model, _, inputs = prompt(mode)
    with torch.no_grad():
        expected = greedy(model, inputs)
        assisted = greedy(model, inputs, assistant_model=model)
        lookup = greedy(model, inputs, prompt_lookup_num_tokens=2)
    assert torch.equal(assisted, expected)
    assert torch.equal(lookup, expected)


@pytest.mark.parametrize("mode", MODES)
def test_left_padded_batch_equals_each_sample_alone(mode):
    model, processor = tiny(mode)
    images, texts = [noise_image(), flat_image()], ["describe the image", "what color is it ?"]
    with torch.no_grad():
        batch = processor(images=images, text=texts, return_tensors="pt")
        together = greedy(model, batch)
        prompt_mask = model.expand_image_tokens(**batch)["attention_mask"]
        assert not bool(prompt_mask[:, -1].eq(0).any())  # left padding: rows right-aligned
        for index in range(2):
            alone = greedy(model, processor(images=images[index], text=texts[index], return_tensors="pt"))[0]
            unpadded = together[index, int(prompt_mask[index].eq(0).sum()) :]
            assert torch.equal(unpadded, alone)


def test_beams_with_several_images_per_row_equal_each_row_alone():
    model, processor = tiny("features")  # the images travel pre-encoded, repeated per beam
    images, texts = [[noise_image(1), flat_image()], [noise_image(2)]], ["<image> and <image> are", "<image> is"]
    kwargs = {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 4, "do_sample": False}
    with torch.no_grad():
        together = model.generate(**processor(images=images, text=texts, return_tensors="pt"), **kwargs)
        for index in range(2):
            alone = model.generate(**processor(images=images[index], text=texts[index], return_tensors="pt"), **kwargs)
            assert torch.equal(together[2 * index : 2 * index + 2, -4:], alone[:, -4:])


@pytest.mark.parametrize("mode", MODES)
def test_generate_from_inputs_embeds(mode):
    model, processor, inputs = prompt(mode)
    text = processor(text=["a red circle"], return_tensors="pt")
    with torch.no_grad():
        from_ids = greedy(model, text)
        from_embeds = greedy(model, {"inputs_embeds": model.embed_input_ids(text["input_ids"])})
        assert torch.equal(from_embeds, from_ids[:, text["input_ids"].shape[1] :])
        # With images: the placeholder embedding once per visual token, replaced by the image (LLaVA's merge).
        expected = greedy(model, inputs)[:, -NEW:]
        ids = placeholder_expanded(model, inputs)
        embeds = model.get_input_embeddings()(ids)
        only_embeds = greedy(model, {"inputs_embeds": embeds, "pixel_values": inputs["pixel_values"]})
        both = greedy(model, {"input_ids": ids, "inputs_embeds": embeds, "pixel_values": inputs["pixel_values"]})
    assert torch.equal(only_embeds, expected)
    assert torch.equal(both[:, : ids.shape[1]], ids) and torch.equal(both[:, -NEW:], expected)


def test_generate_without_a_prompt_starts_from_bos():
    model, _ = tiny("ids")
    with torch.no_grad():
        output = model.generate(max_new_tokens=3, do_sample=False)
        expected = model.generate(input_ids=torch.tensor([[model.generation_config.bos_token_id]]), max_new_tokens=3)
        images = model.generate_images(max_new_tokens=3, do_sample=False)
    assert torch.equal(output, expected)
    assert images.image_token_ids.shape == (1, 3)


@pytest.mark.parametrize("mode", ["ids", "features"])
def test_caller_position_ids_are_expanded_with_the_images(mode):
    model, _, inputs = prompt(mode)
    ids = inputs["input_ids"]
    count = image_token_count(model, inputs["pixel_values"])
    positions = torch.arange(ids.shape[1])[None].clone()
    positions[:, 4:] += 5  # a gap after the image block, so that positions matter beyond a constant shift
    # expanded by hand: the image's tokens continue from its placeholder's position, later ones shift by count - 1
    by_hand = torch.cat((positions[:, :2], positions[:, 2:3] + torch.arange(count), positions[:, 3:] + count - 1), 1)
    with torch.no_grad():
        expanded = model.expand_image_tokens(**inputs, position_ids=positions)
        assert torch.equal(expanded["position_ids"], by_hand)
        out = model(**inputs, position_ids=positions)
        assert torch.equal(out.expanded_position_ids, by_hand)
        reference = model(**expanded)
        torch.testing.assert_close(out.logits, reference.logits, atol=1e-5, rtol=0)
        default = model(**inputs)
        assert not torch.allclose(out.logits, default.logits, atol=1e-3)  # the gap changed something
        generated = greedy(model, inputs, position_ids=positions)
        from_expanded = greedy(model, expanded)
    assert torch.equal(generated, from_expanded)


# ------------------------------------------------------------------------------------------------------------------
# Attention implementation
# ------------------------------------------------------------------------------------------------------------------


def test_attn_implementation_switches_the_whole_model(tmp_path):
    model, processor = build_tiny_random("ids", seed=0)
    model.save_pretrained(tmp_path)
    eager = type(model).from_pretrained(tmp_path, attn_implementation="eager").eval()
    parts = (eager.config, eager.vision_tokenizer.config, eager.language_model.config)
    assert [config._attn_implementation for config in parts] == ["eager"] * 3
    inputs = processor(images=noise_image(), text="describe the image", return_tensors="pt")
    with torch.no_grad():
        eager_logits = eager(**inputs).logits
        eager.set_attn_implementation("sdpa")
        assert [config._attn_implementation for config in parts] == ["sdpa"] * 3
        sdpa_logits = eager(**inputs).logits
    torch.testing.assert_close(eager_logits, sdpa_logits, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------


def test_wrong_attention_mask_and_placeholder_layouts_give_clear_errors():
    model, _, inputs = prompt("features")
    short_mask = inputs["attention_mask"][:, :-1]
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 6\), but the inputs are \(1, 7\)"):
        model(input_ids=inputs["input_ids"], attention_mask=short_mask, pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.generate(input_ids=inputs["input_ids"], attention_mask=short_mask, pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.generate(
            input_ids=inputs["input_ids"], attention_mask=short_mask[0], pixel_values=inputs["pixel_values"]
        )
    count = image_token_count(model, inputs["pixel_values"])
    ids = inputs["input_ids"]
    wrong = torch.cat((ids[:, :2], torch.full((1, count + 1), model.config.image_token_id), ids[:, 3:]), dim=1)
    with pytest.raises(ValueError, match=rf"run\(s\) of lengths \[{count + 1}\] for 1 image\(s\) with \[{count}\]"):
        model(input_ids=wrong, pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(input_ids=ids, inputs_embeds=model.embed_input_ids(ids))
    with pytest.raises(ValueError, match="need a prompt"):
        model.generate(pixel_values=inputs["pixel_values"])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"guidance_scale": float("nan")}, "guidance_scale must be finite"),
        ({"guidance_scale": float("inf")}, "guidance_scale must be finite"),
        ({"guidance_scale": -1.0}, "guidance_scale must be >= 0"),
        ({"guidance_scale": "3"}, "guidance_scale must be a number"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer >= 1"),
        ({"max_new_tokens": 2, "min_new_tokens": 3}, r"min_new_tokens \(3\) exceeds max_new_tokens \(2\)"),
        ({"min_new_tokens": -1}, "min_new_tokens must be an integer >= 0"),
        ({"do_sample": True, "temperature": 0.0}, "temperature must be > 0"),
        ({"do_sample": True, "top_p": 1.5}, r"top_p must lie in \(0, 1\]"),
        ({"negative_input_ids": torch.tensor([[1, 5], [1, 5]])}, r"negative_input_ids must be \[batch=1"),
    ],
)
def test_generate_images_refuses_bad_sampling_arguments(kwargs, error):
    model, processor = tiny("ids")
    exception = TypeError if "number" in error else ValueError
    with pytest.raises(exception, match=error):
        model.generate_images(**processor(text="a red circle", return_tensors="pt"), **kwargs)


def test_loss_matches_cross_entropy_over_the_expanded_sequence_with_labels_of_the_expanded_input():
    model, _, inputs = prompt("codebook")
    with torch.no_grad():
        expanded = model.expand_image_tokens(**inputs, labels=inputs["input_ids"])
        out = model(**expanded)
    labels = expanded["labels"].masked_fill(model.vocabulary.is_visual(expanded["labels"]), -100)
    expected = F.cross_entropy(out.logits[0, :-1], labels[0, 1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_image_text_to_text_pipeline_strips_the_expanded_prompt(mode):
    from transformers import pipeline

    model, processor, inputs = prompt(mode)
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    new_text = pipe(noise_image(), text="describe the image", max_new_tokens=4, return_full_text=False)
    full_text = pipe(noise_image(), text="describe the image", max_new_tokens=4)
    with torch.no_grad():
        expanded = model.expand_image_tokens(**inputs)
        sequences = model.generate(**inputs, max_new_tokens=4)
    answer = processor.batch_decode(sequences[:, expanded["input_ids"].shape[1] :], skip_special_tokens=True)[0]
    assert new_text[0]["generated_text"].strip() == answer.strip()
    assert full_text[0]["generated_text"] == "describe the image" + new_text[0]["generated_text"]
