"""GVTProcessor: layout of image placeholders, pre-tokenization, decoding, chat template, clear errors."""

import functools
import io

import numpy as np
import pytest
import torch
from PIL import Image

from gvt import GVTProcessor
from gvt.tiny_random import build_tiny_random

torch.set_num_threads(1)


@functools.cache
def tiny():
    return build_tiny_random(image_input_mode="ids", seed=0)


def noise_image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8))


def test_one_wrapped_placeholder_per_image_and_pixel_values():
    _, processor = tiny()
    out = processor(images=noise_image(), text="describe the image", return_tensors="pt")
    words = processor.tokenizer.convert_tokens_to_ids(["describe", "the", "image"])
    assert out["input_ids"].tolist() == [[1, 5, 4, 6, *words]]
    assert out["pixel_values"].shape == (1, 3, 112, 112)
    # The placeholder written by the user is wrapped once, wherever it stands; explicit [IMG]<image>[/IMG] too.
    explicit = processor(images=noise_image(), text="describe <image> the", return_tensors="pt")
    assert explicit["input_ids"].tolist() == [[1, words[0], 5, 4, 6, words[1]]]
    wrapped = processor(images=noise_image(), text="describe [IMG]<image>[/IMG] the", return_tensors="pt")
    assert wrapped["input_ids"].tolist() == explicit["input_ids"].tolist()
    # No text at all: the caption layout.
    alone = processor(images=noise_image(), return_tensors="pt")
    assert alone["input_ids"].tolist() == [[1, 5, 4, 6]]


def test_placeholders_and_images_must_match():
    _, processor = tiny()
    with pytest.raises(ValueError, match=r"holds 2 image placeholder\(s\) .* but 1 image\(s\)"):
        processor(images=noise_image(), text="<image> and <image>")
    with pytest.raises(ValueError, match=r"holds 1 image placeholder\(s\) .* but 2 image\(s\)"):
        processor(images=[noise_image(), noise_image(1)], text="<image> a")
    with pytest.raises(ValueError, match="holds 1 image placeholder"):
        processor(text="<image> a")
    with pytest.raises(ValueError, match="3 images for 2 texts"):
        processor(images=[noise_image()] * 3, text=["a", "b"])


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_images_give_clear_errors(monkeypatch):
    _, processor = tiny()
    with pytest.raises(ValueError, match="not a recognised image format, or the data is corrupt"):
        processor(images=b"this is not an image at all", text="a")
    with pytest.raises(ValueError, match="Could not decode image 0"):
        processor(images=encode_png(noise_image())[:60], text="a")
    with pytest.raises(ValueError, match="too small: 1x1"):
        processor(images=Image.new("RGB", (1, 1)), text="a")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match="decompression-bomb limit"):
        processor(images=encode_png(Image.new("RGB", (100, 100))), text="a")


def test_pretokenized_ids_hold_dynamic_visual_ids_between_markers():
    model, processor = tiny()
    images = [noise_image(), Image.new("RGB", (64, 64), (200, 30, 30))]
    out = processor(images=images, text=["a", "b c"], vision_tokenizer=model.vision_tokenizer, return_tensors="pt")
    counts = model.vision_tokenizer.tokenize(processor.image_processor(images, return_tensors="pt")["pixel_values"])
    counts = counts.attention_mask.sum(1).tolist()
    ids, mask = out["input_ids"], out["attention_mask"]
    visual = (ids >= 256) & (ids < 768)
    assert visual.sum(1).tolist() == counts and counts[0] != counts[1]
    assert ids.shape[1] == max(counts[0] + 4, counts[1] + 5)  # <s> [IMG] ... [/IMG] text
    for row in range(2):
        real = ids[row][mask[row].bool()].tolist()
        assert real[1] == 5 and real[2 + counts[row]] == 6  # [IMG] visual... [/IMG]
        assert all(256 <= token < 768 for token in real[2 : 2 + counts[row]])
    assert not bool((ids == processor.image_token_id).any())


def test_pretokenize_a_dataset_with_datasets_map():
    datasets = pytest.importorskip("datasets")
    model, processor = tiny()
    data = datasets.Dataset.from_dict({"image": [encode_png(noise_image(s)) for s in range(2)], "text": ["a", "b"]})

    def tokenize(example):
        return processor(images=example["image"], text=example["text"], vision_tokenizer=model.vision_tokenizer)

    mapped = data.map(tokenize, remove_columns=["image", "text"])
    assert set(mapped.column_names) == {"input_ids", "attention_mask"}
    row = mapped[0]["input_ids"]
    assert row[:2] == [1, 5] and 6 in row and all(token < 768 for token in row)


def test_batch_decode_drops_visual_ids_and_chat_template():
    _, processor = tiny()
    words = processor.tokenizer.convert_tokens_to_ids(["a", "red", "circle"])
    sequences = torch.tensor([[1, 5, 300, 700, 6, *words], [0, 1, 400, 5, 6, words[0], words[1], 2]])
    assert processor.batch_decode(sequences, skip_special_tokens=True) == ["a red circle", "a red"]
    assert processor.decode(sequences[0], skip_special_tokens=True) == "a red circle"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is this ?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == "<s>USER : <image>what is this ? ASSISTANT :"
    encoded = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": noise_image()}, {"type": "text", "text": "what"}]}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    assert encoded["input_ids"][0, 3:6].tolist() == [5, 4, 6] and encoded["pixel_values"].shape[0] == 1


def test_processor_save_and_reload(tmp_path):
    _, processor = tiny()
    processor.save_pretrained(tmp_path)
    again = GVTProcessor.from_pretrained(tmp_path)
    assert (again.visual_token_offset, again.codebook_size, again.image_token) == (256, 512, "<image>")
    image, text = noise_image(), "describe the image"
    first, second = (
        processor(images=image, text=text, return_tensors="pt"),
        again(images=image, text=text, return_tensors="pt"),
    )
    assert torch.equal(first["input_ids"], second["input_ids"])
    torch.testing.assert_close(first["pixel_values"], second["pixel_values"])
    assert again.chat_template == processor.chat_template
