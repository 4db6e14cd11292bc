"""The whole LaVIT model in bfloat16 and float16, loaded the transformers way (`from_pretrained(dtype=...)`):
captioning, answering and image generation run on CPU with tiny models in every input mode."""

import functools

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from gvt.tiny_random import save_tiny_random

torch.set_num_threads(1)

DTYPES = [torch.bfloat16, torch.float16]
MODES = ["ids", "features", "codebook"]


@functools.cache
def repo(mode: str, tmp_root: str) -> str:
    return str(save_tiny_random(f"{tmp_root}/{mode}", image_input_mode=mode, with_decoder=False))


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("half"))


def noise_image(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (60, 80, 3), dtype=np.uint8))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_caption_answer_and_generate_images_in_half_precision(mode, dtype, tmp_root):
    path = repo(mode, tmp_root)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).eval()
    processor = AutoProcessor.from_pretrained(path)
    assert model.dtype == dtype and model.vision_tokenizer.dtype == dtype
    vocabulary = model.vocabulary
    with torch.no_grad():
        for text in ("", "how many red circles are there ?"):  # a caption, an answer
            inputs = processor(images=noise_image(), text=text, return_tensors="pt")
            out = model(**inputs)
            assert out.logits.dtype == dtype and bool(torch.isfinite(out.logits).all())
            expanded = model.expand_image_tokens(**inputs)
            sequences = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
            assert torch.equal(sequences[:, : expanded["input_ids"].shape[1]], expanded["input_ids"])
            assert not bool(vocabulary.is_visual(sequences[:, -4:]).any())
        images = model.generate_images(
            **processor(text="a red circle", return_tensors="pt"), max_new_tokens=4, guidance_scale=3.0
        )
    assert images.image_token_ids.shape[0] == 1 and images.image_token_ids.shape[1] >= 1
    assert bool(((images.image_token_ids >= 0) & (images.image_token_ids < model.config.codebook_size)).all())
