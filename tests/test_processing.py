"""GVTProcessor: layout of image placeholders, pre-tokenization, decoding, chat template, clear errors."""

import functools
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gvt import GVTProcessor
from gvt.processing_gvt import CHAT_TEMPLATE
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


def test_batch_decode_drops_visual_ids():
    _, processor = tiny()
    words = processor.tokenizer.convert_tokens_to_ids(["a", "red", "circle"])
    sequences = torch.tensor([[1, 5, 300, 700, 6, *words], [0, 1, 400, 5, 6, words[0], words[1], 2]])
    assert processor.batch_decode(sequences, skip_special_tokens=True) == ["a red circle", "a red"]
    assert processor.decode(sequences[0], skip_special_tokens=True) == "a red circle"


def test_expanded_prompts_decode_like_the_prompts_the_processor_wrote():
    """`generate` returns the prompt with each placeholder expanded (visual ids, or one `<image>` per token in
    "features" mode); decoding folds each image back into one `<image>`, so the pipeline can strip the prompt."""
    _, processor = tiny()
    prompt = processor(images=noise_image(), text="what color is it ?", return_tensors="pt")["input_ids"][0].tolist()
    at = prompt.index(processor.image_token_id)
    as_ids = prompt[:at] + [300, 301, 302] + prompt[at + 1 :]
    as_features = prompt[:at] + [processor.image_token_id] * 3 + prompt[at + 1 :]
    for skip in (True, False):
        expected = processor.decode(prompt, skip_special_tokens=skip)
        assert processor.decode(as_ids, skip_special_tokens=skip) == expected
        assert processor.decode(as_features, skip_special_tokens=skip) == expected
        decoded = processor.post_process_image_text_to_text(
            torch.tensor([as_ids, as_features]), skip_special_tokens=skip
        )
        assert decoded == [expected, expected]
    assert processor.decode(prompt, skip_special_tokens=True) == "what color is it ?"
    assert processor.decode(as_ids).split() == ["<s>", "[IMG]", "<image>", "[/IMG]", "what", "color", "is", "it", "?"]


def test_chat_template_is_the_training_layout_with_assistant_masks():
    _, processor = tiny()
    image = noise_image()
    question = "how many red circles are there ?"
    chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True)
    assert text == "<s><image>" + question  # no role markers: `<s> [IMG] <image> [/IMG] prompt answer </s>`
    from_chat = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
    plain = processor(images=image, text=question)
    assert from_chat["input_ids"] == plain["input_ids"]
    np.testing.assert_array_equal(from_chat["pixel_values"][0], plain["pixel_values"][0])

    answer = {"role": "assistant", "content": [{"type": "text", "text": "three"}]}
    masked = processor.apply_chat_template(
        [chat + [answer]], tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    ids, mask = masked["input_ids"][0], masked["assistant_masks"][0].bool()
    tokenizer = processor.tokenizer
    assert ids[mask].tolist() == [tokenizer.convert_tokens_to_ids("three"), tokenizer.eos_token_id]
    assert ids[~mask].tolist() == plain["input_ids"]  # the prompt, exactly as the plain call lays it out
    # A text with no placeholder gets its images prepended; the masks still land on the answer.
    no_placeholder = [
        {"role": "user", "content": [{"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": "three"}]},
    ]
    prepended = processor.apply_chat_template(
        no_placeholder,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        return_tensors="pt",
        processor_kwargs={"images": [image]},
    )
    assert prepended["input_ids"][0].tolist() == ids.tolist()
    assert prepended["assistant_masks"][0].tolist() == mask.long().tolist()


def test_kwargs_flat_nested_tokenizer_defaults_and_conflicts():
    _, processor = tiny()
    image = noise_image()
    flat = processor(images=image, text="a", size={"height": 28, "width": 28}, padding="max_length", max_length=9)
    nested = processor(
        images=image,
        text="a",
        images_kwargs={"size": {"height": 28, "width": 28}},
        text_kwargs={"padding": "max_length", "max_length": 9},
    )
    assert np.asarray(flat["pixel_values"]).shape == np.asarray(nested["pixel_values"]).shape == (1, 3, 28, 28)
    assert len(flat["input_ids"]) == len(nested["input_ids"]) == 9
    with pytest.raises(ValueError, match="max_length was passed two times"):
        processor(images=image, text="a", max_length=9, text_kwargs={"max_length": 9})
    # Arguments the tokenizer was created with are the defaults of every call.
    tokenizer = processor.tokenizer
    tokenizer.init_kwargs.update(padding="max_length", max_length=12)
    try:
        assert len(processor(images=image, text="a")["input_ids"]) == 12
        assert len(processor(images=image, text="a", max_length=10)["input_ids"]) == 10
    finally:
        del tokenizer.init_kwargs["padding"], tokenizer.init_kwargs["max_length"]
    # A batch is padded to its longest text by default.
    batch = processor(images=[image, image], text=["a", "a red circle"], return_tensors="pt")
    assert batch["input_ids"].shape == (2, 7) and batch["attention_mask"][0].tolist() == [0, 0, 1, 1, 1, 1, 1]


def test_offsets_replacements_and_token_types():
    _, processor = tiny()
    out = processor(
        images=[noise_image(), noise_image(1)],
        text=["a <image> b", "<image> c"],
        return_offsets_mapping=True,
        return_text_replacement_offsets=True,
        return_mm_token_type_ids=True,
    )
    laid_out = ["a [IMG]<image>[/IMG] b", "[IMG]<image>[/IMG] c"]
    for text, changes in zip(laid_out, out["text_replacement_offsets"]):
        (change,) = changes
        start, end = change["new_span"]
        assert text[start:end] == change["replacement"] == "[IMG]<image>[/IMG]"
        assert change["span"] == (start, start + len("<image>"))
    prepended = processor(images=noise_image(), text="c", return_text_replacement_offsets=True)
    assert prepended["text_replacement_offsets"] == [  # not written by the caller: an insertion at 0
        {"type": "image", "span": (0, 0), "new_span": (0, 18), "text": "", "replacement": "[IMG]<image>[/IMG]"}
    ]
    assert len(out["offset_mapping"][0]) == len(out["input_ids"][0])
    types = out["mm_token_type_ids"]
    assert [row.count(1) for row in types] == [1, 1]
    assert out["input_ids"][0][types[0].index(1)] == processor.image_token_id


def test_empty_inputs_give_clear_errors():
    _, processor = tiny()
    with pytest.raises(ValueError, match="`text` is an empty list"):
        processor(text=[])
    with pytest.raises(ValueError, match="`images` is an empty list"):
        processor(images=[], text="a")
    with pytest.raises(ValueError, match="Give text, images or both"):
        processor()
    with pytest.raises(TypeError, match="`text` must be a string or a list of strings"):
        processor(text=[1, 2])
    with pytest.raises(ValueError, match="takes images and text only"):
        processor(text="a", videos=[np.zeros((2, 8, 8, 3))])
    with pytest.raises(ValueError, match=r"Got 3 lists of images for 2 texts"):
        processor(images=[[noise_image()], [noise_image()], [noise_image()]], text=["a", "b"])


def test_images_as_paths_dataset_dicts_and_bit_depth(tmp_path):
    _, processor = tiny()
    image = noise_image()
    path = tmp_path / "scene.png"
    image.save(path)
    reference = processor(images=image, text="a", return_tensors="pt")["pixel_values"]
    for source in (str(path), path, {"bytes": encode_png(image), "path": None}, {"bytes": None, "path": str(path)}):
        torch.testing.assert_close(processor(images=source, text="a", return_tensors="pt")["pixel_values"], reference)
    deep = np.full((40, 40, 3), 200, dtype=np.int32)
    with pytest.raises(ValueError, match="pass `input_bit_depth`"):
        processor(images=deep, text="a")
    sixteen = processor(images=deep, text="a", input_bit_depth=16, return_tensors="pt")["pixel_values"]
    nested = processor(images=deep, text="a", images_kwargs={"input_bit_depth": 16}, return_tensors="pt")
    torch.testing.assert_close(nested["pixel_values"], sixteen)
    dark = processor(images=deep.astype(np.uint16), text="a", return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(dark, sixteen)


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
    assert again.chat_template == processor.chat_template == CHAT_TEMPLATE
    assert again.to_dict() == processor.to_dict()  # saving leaves no `auto_map` behind on the saved object
    assert json.loads((tmp_path / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_gvt.GVTProcessor"
    }
