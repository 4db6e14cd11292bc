"""The embedded default through transformers' pipelines: chat messages get the layout the model was trained with
(the same answers as plain prompts and as `generate`), and images arrive in every form the image pipelines take."""

import io

import numpy as np
import pytest
import torch
from transformers import pipeline

import gvt
from gvt.data import build_synthetic_dataset
from gvt.default_model import DEFAULT_MODEL_DIR, load_default
from gvt.default_model.evaluation import generate_answers

torch.set_num_threads(1)

@pytest.fixture(scope="module")
def default():
    return load_default(with_decoder=False)


@pytest.fixture(scope="module")
def scenes():
    """Held-out test scenes (the default never saw them) with a counting and a presence question each."""
    rows = build_synthetic_dataset(0, 0, 4, image_size=112, seed=0)["test"]
    images = [row["image"].convert("RGB") for row in rows]
    questions = [
        (index, q["question"], str(q["answer"]))
        for index, row in enumerate(rows)
        for q in (row["count_questions"][0], row["presence_questions"][0])
    ]
    return images, questions


def test_chat_messages_get_the_same_answers_as_plain_prompts(default, scenes):
    images, questions = scenes
    prompts = [question for _, question, _ in questions]
    question_images = [images[index] for index, _, _ in questions]
    expected = generate_answers(default.model, default.processor, question_images, prompts, max_new_tokens=4)
    assert all(answer.isdigit() or answer in ("yes", "no") for answer in expected), expected
    references = [reference for _, _, reference in questions]
    assert sum(a == r for a, r in zip(expected, references)) >= len(references) // 2  # the model, not noise

    answer = pipeline("image-text-to-text", model=str(DEFAULT_MODEL_DIR))  # the stock pipeline and chat template
    chats = [
        [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": prompt}]}]
        for image, prompt in zip(question_images, prompts)
    ]
    from_chat = [out[0]["generated_text"][-1]["content"].strip() for out in answer(text=chats, max_new_tokens=4)]
    plain = answer(images=question_images, text=prompts, max_new_tokens=4, return_full_text=False)
    assert from_chat == expected
    assert [out["generated_text"].strip() for out in plain] == expected


def test_captions_from_every_image_form(default, scenes, tmp_path):
    images, _ = scenes
    image = images[0]
    path = tmp_path / "scene.png"
    image.save(path)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    captioner = pipeline("image-to-text", model=str(DEFAULT_MODEL_DIR), pipeline_class=gvt.GVTImageToTextPipeline)
    expected = captioner(image, max_new_tokens=12)[0]["generated_text"]
    assert len(expected.split()) >= 3
    for source in (str(path), path, np.asarray(image), torch.from_numpy(np.array(image)).permute(2, 0, 1)):
        assert captioner(source, max_new_tokens=12)[0]["generated_text"] == expected
    assert captioner({"bytes": buffer.getvalue(), "path": None}, max_new_tokens=12)[0]["generated_text"] == expected
    batch = captioner([image, str(path)], max_new_tokens=12)
    assert [out["generated_text"] for out in batch] == [expected, expected]
    with pytest.raises(ValueError, match="is a URL and HF_HUB_OFFLINE is set"):
        captioner("https://example.com/scene.png", max_new_tokens=2)
    # The caption equals the bare model's, decoded from the new tokens.
    inputs = default.processor(images=image, return_tensors="pt")
    with torch.no_grad():
        sequences = default.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    new_tokens = sequences[:, inputs["input_ids"].shape[1] :]
    assert expected == default.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]


def test_datasets_columns_and_iterables(scenes):
    datasets = pytest.importorskip("datasets")
    from transformers.pipelines.pt_utils import KeyDataset

    images, _ = scenes
    captioner = pipeline("image-to-text", model=str(DEFAULT_MODEL_DIR), pipeline_class=gvt.GVTImageToTextPipeline)
    expected = [out["generated_text"] for out in captioner(images[:2], max_new_tokens=8)]
    column = datasets.Dataset.from_dict({"image": images[:2]}).cast_column("image", datasets.Image())
    assert [out["generated_text"] for out in captioner(column["image"], max_new_tokens=8)] == expected
    undecoded = column.cast_column("image", datasets.Image(decode=False))
    assert [out["generated_text"] for out in captioner(undecoded["image"], max_new_tokens=8)] == expected
    streamed = captioner(KeyDataset(column, "image"), max_new_tokens=8)
    assert [out["generated_text"] for out in streamed] == expected
    generated = captioner((image for image in images[:2]), max_new_tokens=8, batch_size=2)
    assert [out[0]["generated_text"] for out in generated] == expected
