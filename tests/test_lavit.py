"""LaVITForCausalLM: the splice against hand-built embeddings, batching, generation constraints, CFG, losses, errors."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError
from PIL import Image
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as transformers_logging

from gvt import GVTConfig, LaVITForCausalLM
from gvt.tiny_random import build_tiny_random

torch.set_num_threads(1)

MODES = ["ids", "features", "codebook"]
ATOL = 1e-5


@functools.cache
def tiny(mode: str):
    return build_tiny_random(image_input_mode=mode, seed=0)


def noise_image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8))


def flat_image() -> Image.Image:
    return Image.new("RGB", (64, 64), (200, 30, 30))


def by_hand(model: LaVITForCausalLM, pixel_values: torch.Tensor, text_ids: list[int]) -> tuple[torch.Tensor, int]:
    """`<s> [IMG] visual [/IMG] text` embedded by hand, without the model's splice; returns embeds and the number of
    visual tokens."""
    config = model.config
    out = model.vision_tokenizer(pixel_values)
    count = int(out.attention_mask.sum())
    codes = out.token_ids[0, :count]
    embed = model.language_model.get_input_embeddings()
    bos, start, end = config.text_config.bos_token_id, config.image_start_token_id, config.image_end_token_id
    before = embed(torch.tensor([[bos, start]]))
    after = embed(torch.tensor([[end] + text_ids]))
    if config.image_input_mode == "ids":
        visual = embed((codes + config.visual_token_offset)[None])
    elif config.image_input_mode == "features":
        visual = out.features[:, :count]
    else:
        visual = model.codebook_projector(model.vision_tokenizer.quantizer.codebook.weight[codes])[None]
    return torch.cat((before, visual, after), dim=1), count


@pytest.mark.parametrize("mode", MODES)
def test_logits_equal_bare_language_model_fed_by_hand(mode):
    model, processor = tiny(mode)
    inputs = processor(images=noise_image(), text="describe the image", return_tensors="pt")
    text_ids = processor.tokenizer("describe the image", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model(**inputs)
        embeds, count = by_hand(model, inputs["pixel_values"], text_ids)
        expected = model.language_model(inputs_embeds=embeds).logits
    assert (
        out.logits.shape == expected.shape == (1, 2 + count + 1 + len(text_ids), model.config.text_config.vocab_size)
    )
    torch.testing.assert_close(out.logits, expected, atol=ATOL, rtol=0)
    image_positions = out.expanded_input_ids[0, 2 : 2 + count]
    if mode == "features":  # the placeholder once per visual token, filled by the features
        assert bool((image_positions == model.config.image_token_id).all())
    else:  # the visual ids themselves
        assert bool(((image_positions >= 256) & (image_positions < 256 + 512)).all())


@pytest.mark.parametrize("mode", MODES)
def test_batch_of_different_images_pads_and_equals_unbatched(mode):
    model, processor = tiny(mode)
    images, texts = [noise_image(), flat_image()], ["describe the image", "what color is it ?"]
    with torch.no_grad():
        batch = processor(images=images, text=texts, return_tensors="pt")
        out = model(**batch)
        counts = out.image_attention_mask.sum(1).tolist()
        assert counts[0] != counts[1]  # different content, different token counts
        mask = out.expanded_attention_mask
        assert mask.shape[1] == out.logits.shape[1]
        for index in range(2):
            single = processor(images=images[index], text=texts[index], return_tensors="pt")
            alone = model(**single).logits[0]
            real = mask[index].bool()
            assert int(real.sum()) == alone.shape[0]
            assert not bool(mask[index, -1] == 0)  # left padding: rows are right-aligned
            torch.testing.assert_close(out.logits[index][real], alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["ids", "codebook"])
def test_pretokenized_ids_equal_pixel_inputs(mode):
    model, processor = tiny(mode)
    images, texts = [noise_image(), flat_image()], ["describe the image", "what color"]
    with torch.no_grad():
        pixels = processor(images=images, text=texts, return_tensors="pt")
        ids = processor(images=images, text=texts, vision_tokenizer=model.vision_tokenizer, return_tensors="pt")
        assert "pixel_values" not in ids
        from_pixels = model(**pixels)
        from_ids = model(**ids)
    torch.testing.assert_close(ids["input_ids"], from_pixels.expanded_input_ids)
    torch.testing.assert_close(ids["attention_mask"], from_pixels.expanded_attention_mask)
    torch.testing.assert_close(from_ids.logits, from_pixels.logits, atol=ATOL, rtol=0)


def test_loss_on_text_tokens_by_default_and_optionally_on_visual_tokens():
    model, processor = tiny("ids")
    inputs = processor(images=noise_image(), text="describe the image", return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, labels=inputs["input_ids"])
        labels = out.expanded_labels
        visual = (out.expanded_input_ids >= 256) & (out.expanded_input_ids < 768)
        assert bool((labels[visual] == -100).all())
        assert bool((labels[~visual] == out.expanded_input_ids[~visual]).all())
        expected = F.cross_entropy(out.logits[0, :-1], labels[0, 1:], ignore_index=-100)
        torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=0)
        with_visual = model(**inputs, labels=inputs["input_ids"], loss_on_visual_tokens=True)
        expected = F.cross_entropy(out.logits[0, :-1], out.expanded_input_ids[0, 1:])
        torch.testing.assert_close(with_visual.loss, expected, atol=1e-5, rtol=0)


def boost_hook(ids: torch.Tensor | slice, amount: float):
    def hook(module, args, output):
        output = output.clone()
        output[..., ids] += amount
        return output

    return hook


def test_text_generation_never_emits_visual_ids_and_matches_bare_lm():
    model, processor = tiny("ids")
    inputs = processor(images=noise_image(), text="describe the image", return_tensors="pt")
    handle = model.language_model.lm_head.register_forward_hook(boost_hook(slice(256, 768), 100.0))
    try:
        with torch.no_grad():
            out = model(**inputs)
            assert int(out.logits[0, -1].argmax()) >= 256  # unconstrained, a visual id would win
            sequences = model.generate(**inputs, max_new_tokens=6, do_sample=False)
            embeds = model.embed_input_ids(out.expanded_input_ids)
            bare = model.language_model.generate(
                inputs_embeds=embeds,
                max_new_tokens=6,
                do_sample=False,
                logits_processor=[model.text_logits_processor()],
                pad_token_id=0,
                eos_token_id=2,
            )
    finally:
        handle.remove()
    prompt_length = out.expanded_input_ids.shape[1]
    assert torch.equal(sequences[:, :prompt_length], out.expanded_input_ids)  # starts with the expanded prompt
    new = sequences[:, prompt_length:]
    assert bool((new < 256).all())
    assert not bool(((new == 4) | (new == 5) | (new == 6)).any())
    assert torch.equal(new, bare[:, : new.shape[1]])


def test_batched_left_padded_generation_equals_unbatched_and_beam_and_sampling_work():
    model, processor = tiny("features")
    images, texts = [noise_image(), flat_image()], ["describe the image", "what color is it ?"]
    with torch.no_grad():
        batch = processor(images=images, text=texts, return_tensors="pt")
        batched = model.generate(**batch, max_new_tokens=5, do_sample=False, min_new_tokens=5)
        for index in range(2):
            single = processor(images=images[index], text=texts[index], return_tensors="pt")
            alone = model.generate(**single, max_new_tokens=5, do_sample=False, min_new_tokens=5)
            assert torch.equal(batched[index, -5:], alone[0, -5:])
        expanded = model.expand_image_tokens(**batch)
        prompt_length = expanded["input_ids"].shape[1]
        beams = model.generate(**batch, max_new_tokens=4, num_beams=3, num_return_sequences=2, do_sample=False)
        assert beams.shape[0] == 4 and torch.equal(beams[::2, :prompt_length], expanded["input_ids"])
        torch.manual_seed(0)
        sampled = model.generate(**batch, max_new_tokens=4, do_sample=True, top_k=20, top_p=0.9)
    for sequences in (beams, sampled):
        assert bool((sequences[:, prompt_length:] < 256).all())


@pytest.mark.parametrize("mode", ["ids", "codebook"])
def test_image_generation_emits_only_visual_ids_and_stops_at_image_end(mode):
    model, processor = tiny(mode)
    prompt = processor(text="a red circle", return_tensors="pt")
    with torch.no_grad():
        torch.manual_seed(0)
        free = model.generate_images(**prompt, max_new_tokens=12, do_sample=True, top_k=50, top_p=0.9)
        assert free.image_token_ids.shape[1] >= 1
        written = free.sequences[free.sequences != 0]
        assert bool(((written >= 256) | (written == 6)).all())
        codes = free.image_token_ids[free.attention_mask.bool()]
        assert bool(((codes >= 0) & (codes < 512)).all())
        # With [/IMG] strongly preferred, generation writes the minimum of visual ids, then stops.
        handle = model.language_model.lm_head.register_forward_hook(boost_hook(6, 1000.0))
        try:
            stopped = model.generate_images(**prompt, min_new_tokens=3, max_new_tokens=12, do_sample=False)
        finally:
            handle.remove()
    assert stopped.sequences.shape[1] == 4
    assert int(stopped.sequences[0, -1]) == 6
    assert stopped.attention_mask.sum().item() == 3


def test_image_plus_text_to_image_and_generation_mode_route():
    model, processor = tiny("ids")
    inputs = processor(images=noise_image(), text="the same in blue", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, generation_mode="image", max_new_tokens=5, do_sample=False)
    length = out.image_token_ids.shape[1]
    assert 1 <= length <= 5 and bool(out.attention_mask.all())
    assert bool(((out.image_token_ids >= 0) & (out.image_token_ids < 512)).all())
    assert bool((out.sequences[0, :length] >= 256).all())


def test_classifier_free_guidance_scale_one_equals_none_and_scale_three_matches_formula():
    model, processor = tiny("ids")
    prompt = processor(text="a red circle", return_tensors="pt")
    with torch.no_grad():
        none = model.generate_images(**prompt, max_new_tokens=6, do_sample=False)
        one = model.generate_images(**prompt, max_new_tokens=6, do_sample=False, guidance_scale=1.0)
        three = model.generate_images(
            **prompt, max_new_tokens=1, min_new_tokens=1, do_sample=False, guidance_scale=3.0
        )
        ids = torch.cat((prompt["input_ids"], torch.tensor([[5]])), dim=1)
        cond = model(input_ids=ids).logits[0, -1].log_softmax(-1)
        uncond = model(input_ids=torch.tensor([[1, 5]])).logits[0, -1].log_softmax(-1)
        guided = 3.0 * (cond - uncond) + uncond
        allowed = torch.full_like(guided, -float("inf"))
        allowed[256:768] = guided[256:768]
    assert torch.equal(none.image_token_ids, one.image_token_ids)
    assert int(three.image_token_ids[0, 0]) == int(allowed.argmax()) - 256


def test_bad_inputs_give_clear_errors():
    model, processor = tiny("ids")
    inputs = processor(images=noise_image(), text="describe", return_tensors="pt")
    with pytest.raises(ValueError, match=r"must lie in \[0, 768\)"):
        model(input_ids=torch.tensor([[1, 768]]))
    with pytest.raises(ValueError, match="must lie in"):
        model(input_ids=torch.tensor([[1, -3]]))
    # Placeholders without images: read as the ordinary token they are (as LLaVA does), with a warning.
    transformers_logging.warning_once.cache_clear()
    with CaptureLogger(transformers_logging.get_logger("gvt.modeling_lavit")) as captured:
        out = model(input_ids=inputs["input_ids"])
    assert "no pixel_values were given: they are embedded as ordinary tokens" in captured.out
    assert out.logits.shape[1] == inputs["input_ids"].shape[1]
    two = torch.cat((inputs["pixel_values"], inputs["pixel_values"]))
    with pytest.raises(ValueError, match=r"1 image placeholder\(s\) in 1 run\(s\) of lengths \[1\] for 2 image\(s\)"):
        model(input_ids=inputs["input_ids"], pixel_values=two)
    with pytest.raises(ValueError, match="generation_mode"):
        model.generate(**inputs, generation_mode="video")


CONFIG_ERRORS = (ValueError, StrictDataclassClassValidationError)


def test_config_validation_and_presets():
    config = GVTConfig.from_preset("lavit-7b-v2")
    assert config.text_config.vocab_size >= config.visual_token_offset + config.vision_config.codebook_size
    assert (config.image_start_token_id, config.image_end_token_id, config.visual_token_offset) == (
        32000,
        32001,
        32002,
    )
    with pytest.raises(CONFIG_ERRORS, match="must cover the visual ids"):
        GVTConfig.from_preset("tiny", visual_token_offset=300)
    with pytest.raises(CONFIG_ERRORS, match="falls inside the visual id range"):
        GVTConfig.from_preset("tiny", image_token_id=300)
    with pytest.raises(CONFIG_ERRORS, match="projection_dim"):
        GVTConfig.from_preset("tiny", image_input_mode="features", vision_config={"projection_dim": 32})


def test_resize_token_embeddings_keeps_config_in_step():
    model, _ = build_tiny_random("ids", seed=1)
    model.resize_token_embeddings(800)
    assert model.config.text_config.vocab_size == 800
    assert model.get_output_embeddings().out_features == 800
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 5, 300, 6]])).logits
    assert logits.shape[-1] == 800


def test_image_generation_caps_codes_at_num_patches_and_ignores_caption_beams():
    model, processor = tiny("ids")
    model.generation_config.num_beams = 2  # a captioning default must not turn image generation into beam search
    prompt = processor(text="a red circle", return_tensors="pt")
    num_patches = model.config.vision_config.num_patches
    handle = model.language_model.lm_head.register_forward_hook(boost_hook(6, -1000.0))  # never stop by itself
    try:
        with torch.no_grad():
            out = model.generate_images(
                **prompt, max_new_tokens=num_patches + 5, min_new_tokens=num_patches + 5, guidance_scale=2.0
            )
    finally:
        handle.remove()
    assert out.sequences.shape[1] == num_patches + 5
    assert out.image_token_ids.shape[1] == num_patches
    assert int(out.attention_mask.sum()) == num_patches
    conditioning = model.vision_tokenizer.decode(out.image_token_ids, out.attention_mask)
    assert conditioning.prompt_embeds.shape[1] == model.config.vision_config.decoder_num_queries


def test_a_language_model_checkpoint_alone_is_refused(tmp_path):
    # The base model (`base_model_prefix`) is the Llama inside: its checkpoint holds no vision tokenizer and no image
    # token ids, so building a LaVIT from it fails with an error naming what is missing, not with random weights.
    model, _ = tiny("ids")
    assert model.base_model is model.language_model
    model.base_model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"lacks \['vision_config', 'text_config', 'image_input_mode'"):
        LaVITForCausalLM.from_pretrained(tmp_path)
    # What it is built from instead: the language model's weights under a full GVTConfig.
    fresh = LaVITForCausalLM(model.config)
    fresh.language_model.load_state_dict(type(model.language_model).from_pretrained(tmp_path).state_dict())
    for name, weight in model.language_model.state_dict().items():
        assert torch.equal(fresh.language_model.state_dict()[name], weight), name
