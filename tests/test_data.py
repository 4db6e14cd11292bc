"""Synthetic scenes: determinism, splits, question/caption consistency, label masks, patch labels, vocabulary."""

import datasets
import numpy as np
import pytest

from gvt.data import (
    BACKGROUND_CLASS_ID,
    NUM_PATCH_CLASSES,
    OBJECT_COLOURS,
    SHAPE_NAMES,
    TEXT_CLASS_ID,
    SceneObject,
    SyntheticSceneConfig,
    binding_questions_for,
    build_synthetic_dataset,
    generate_scene,
    object_class_id,
    patch_class_names,
    patch_labels,
    render_label_mask,
    scene_seed_for,
    scene_texts,
    to_caption_rows,
    to_qa_rows,
    train_text_tokenizer,
)
from gvt.data.scene_language import count_matching
from gvt.data.scene_vocabulary import BACKGROUND_COLOURS, number_word, plural

NUM_TRAIN, NUM_VALIDATION, NUM_TEST = 60, 12, 12
COLOUR_TOLERANCE = 12  # the generator's default colour jitter


@pytest.fixture(scope="module")
def dataset():
    return build_synthetic_dataset(NUM_TRAIN, NUM_VALIDATION, NUM_TEST, seed=0)


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(scene_seed_for(0, "train", index)) for index in range(150)]


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_same_seed_gives_identical_scenes_and_different_seeds_differ():
    first, again = generate_scene(123), generate_scene(123)
    assert np.array_equal(_pixels(first.image), _pixels(again.image))
    assert (first.caption, first.objects, first.count_questions, first.presence_questions, first.text) == (
        again.caption,
        again.objects,
        again.count_questions,
        again.presence_questions,
        again.text,
    )
    assert not np.array_equal(_pixels(first.image), _pixels(generate_scene(124).image))


def test_dataset_is_reproducible_and_split_prefixes_are_stable(dataset):
    again = build_synthetic_dataset(8, 2, 2, seed=0)
    for split in ("train", "validation", "test"):
        size = len(again[split])
        assert again[split]["caption"] == dataset[split]["caption"][:size]
        assert again[split]["scene_seed"] == dataset[split]["scene_seed"][:size]
        for index in range(size):
            assert np.array_equal(_pixels(again[split][index]["image"]), _pixels(dataset[split][index]["image"]))
    other_seed = build_synthetic_dataset(8, 0, 0, seed=1)
    assert other_seed["train"]["scene_seed"] != again["train"]["scene_seed"]
    assert other_seed["train"]["caption"] != again["train"]["caption"]


def test_splits_never_share_scene_seeds_or_images(dataset):
    seeds = {split: set(dataset[split]["scene_seed"]) for split in dataset}
    assert len(seeds["train"]) == NUM_TRAIN and len(seeds["validation"]) == NUM_VALIDATION
    assert not seeds["train"] & seeds["validation"]
    assert not seeds["train"] & seeds["test"]
    assert not seeds["validation"] & seeds["test"]
    encoded = dataset.cast_column("image", datasets.Image(decode=False))
    image_bytes = {split: {row["bytes"] for row in encoded[split]["image"]} for split in encoded}
    assert not image_bytes["train"] & image_bytes["test"]
    assert not image_bytes["train"] & image_bytes["validation"]


@pytest.mark.parametrize("image_size", [112, 224])
def test_images_are_rgb_at_the_requested_size(image_size):
    for index in range(5):
        scene = generate_scene(scene_seed_for(0, "test", index), image_size=image_size)
        assert scene.image.mode == "RGB" and scene.image.size == (image_size, image_size)
        for scene_object in scene.objects:
            x0, y0, x1, y1 = scene_object["bbox"]
            assert 0 <= x0 < x1 <= image_size and 0 <= y0 < y1 <= image_size


def test_dataset_columns_and_types(dataset):
    row = dataset["train"][0]
    assert row["image"].mode == "RGB" and row["image"].size == (112, 112)
    assert set(row) >= {"image", "caption", "objects", "count_questions", "presence_questions", "text", "text_bbox"}
    assert all(isinstance(q["answer"], int) for q in row["count_questions"])
    assert all(q["answer"] in ("yes", "no") for q in row["presence_questions"])


def test_scenes_cover_the_vocabulary_and_object_counts(scenes):
    assert len(SHAPE_NAMES) >= 4 and len(OBJECT_COLOURS) >= 6
    counts = {len(scene.objects) for scene in scenes}
    config = SyntheticSceneConfig()
    assert 0 in counts and max(counts) == config.max_focus_count + config.max_distractors
    assert {o["shape"] for s in scenes for o in s.objects} == set(SHAPE_NAMES)
    assert {o["colour"] for s in scenes for o in s.objects} == set(OBJECT_COLOURS)
    assert {s.layout.background.kind for s in scenes} == {"flat", "gradient", "noisy", "textured"}
    with_text = sum(bool(scene.text) for scene in scenes)
    assert 0.3 * len(scenes) < with_text < 0.7 * len(scenes)
    boxes_overlap = False
    for scene in scenes:
        boxes = [o["bbox"] for o in scene.objects]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                boxes_overlap |= min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])
    assert boxes_overlap, "expected some occlusion"


def test_count_answers_match_objects(scenes):
    answers = []
    for scene in scenes:
        objects = scene.layout.objects
        for question in scene.count_questions:
            assert question["answer"] == count_matching(objects, question["shape"], question["colour"])
            assert question["question"].startswith("How many")
            if question["shape"]:
                assert plural(question["shape"]) in question["question"]
            if question["colour"]:
                assert question["colour"] in question["question"]
            answers.append(question["answer"])
    assert 0 in answers and max(answers) >= 5
    assert 0.1 < answers.count(0) / len(answers) < 0.5


def test_presence_questions_are_balanced_and_correct(scenes):
    answers = []
    for scene in scenes:
        present = {(o["colour"], o["shape"]) for o in scene.objects}
        for question in scene.presence_questions:
            expected = "yes" if (question["colour"], question["shape"]) in present else "no"
            assert question["answer"] == expected
            assert f"{question['colour']} {question['shape']}" in question["question"]
            answers.append(question["answer"])
    assert abs(answers.count("yes") / len(answers) - 0.5) < 0.05


def test_captions_name_every_group_with_its_count(scenes):
    for scene in scenes:
        groups: dict[tuple[str, str], int] = {}
        for o in scene.objects:
            groups[(o["colour"], o["shape"])] = groups.get((o["colour"], o["shape"]), 0) + 1
        for (colour, shape), count in groups.items():
            phrase = f"{colour} {shape}" if count == 1 else f"{number_word(count)} {colour} {plural(shape)}"
            assert phrase in scene.caption, (phrase, scene.caption)
        assert scene.layout.background.colour in scene.caption
        if scene.text:
            assert f'"{scene.text}"' in scene.caption


def test_label_mask_is_aligned_with_the_image(scenes):
    flat = [s for s in scenes if s.layout.background.kind == "flat" and s.objects][:10]
    assert flat
    for scene in flat:
        mask, pixels = scene.label_mask(), _pixels(scene.image).astype(int)
        background = np.array(BACKGROUND_COLOURS[scene.layout.background.colour])
        assert np.array_equal(
            pixels[mask == BACKGROUND_CLASS_ID], np.broadcast_to(background, pixels[mask == 0].shape)
        )
        for o in scene.objects:
            covered = mask == object_class_id(o["shape"], o["colour"])
            assert covered.any(), "every object stays visible"
            error = np.abs(pixels[covered] - np.array(OBJECT_COLOURS[o["colour"]]))
            assert error.max() <= COLOUR_TOLERANCE
        if scene.text:
            assert (mask == TEXT_CLASS_ID).sum() == np.prod(np.diff(np.reshape(scene.text_bbox, (2, 2)), axis=0))


def test_patch_labels_follow_objects_and_occlusion_order():
    below = SceneObject("square", "red", (14, 14, 42, 42))
    above = SceneObject("square", "blue", (28, 28, 56, 56))
    labels = patch_labels([below.to_dict(), above], image_size=112, patch_size=14)
    assert labels.shape == (8, 8) and labels.dtype == np.int64
    expected = np.zeros((8, 8), dtype=np.int64)
    expected[1:3, 1:3] = object_class_id("square", "red")
    expected[2:4, 2:4] = object_class_id("square", "blue")  # drawn later: occludes the red square
    assert np.array_equal(labels, expected)
    with_text = patch_labels([], image_size=112, patch_size=16, text_bbox=[0, 0, 32, 16])
    assert (
        with_text.shape == (7, 7)
        and with_text[0, :2].tolist() == [TEXT_CLASS_ID] * 2
        and with_text.sum() == 2 * TEXT_CLASS_ID
    )


def test_patch_labels_are_background_away_from_objects(scenes):
    patch_size, image_size = 14, 112
    for scene in scenes[:40]:
        labels = patch_labels(scene.objects, image_size, patch_size, scene.text_bbox)
        occupied = np.zeros_like(labels, dtype=bool)
        for box in [o["bbox"] for o in scene.objects] + ([scene.text_bbox] if scene.text else []):
            x0, y0, x1, y1 = box
            occupied[y0 // patch_size : (y1 - 1) // patch_size + 1, x0 // patch_size : (x1 - 1) // patch_size + 1] = (
                True
            )
        assert np.all(labels[~occupied] == BACKGROUND_CLASS_ID)
        present = {object_class_id(o["shape"], o["colour"]) for o in scene.objects} | (
            {TEXT_CLASS_ID} if scene.text else set()
        )
        assert set(np.unique(labels).tolist()) <= present | {BACKGROUND_CLASS_ID}
    assert len(patch_class_names()) == NUM_PATCH_CLASSES and patch_class_names()[TEXT_CLASS_ID] == "text"
    mask = render_label_mask(scenes[0].objects, image_size, scenes[0].text_bbox)
    assert mask.shape == (image_size, image_size) and mask.dtype == np.uint8


def test_patch_labels_reject_a_patch_size_that_does_not_divide_the_image():
    with pytest.raises(ValueError, match="patch_size"):
        patch_labels([], image_size=112, patch_size=15)


def test_text_is_drawn_dark_inside_its_box(scenes):
    scene = next(s for s in scenes if s.text and s.layout.background.kind != "noisy")
    x0, y0, x1, y1 = scene.text_bbox
    region = _pixels(scene.image)[y0:y1, x0:x1].max(axis=-1)
    assert region.min() <= 60 and (region > 150).any()  # dark ink on a pale background


def test_flat_views(dataset):
    train = dataset["train"]
    count_rows = to_qa_rows(train, kind="count")
    assert len(count_rows) == sum(len(q) for q in train["count_questions"])
    assert count_rows.column_names == ["scene_id", "image", "prompt", "answer"]
    first = count_rows[0]
    assert first["answer"] == str(train[0]["count_questions"][0]["answer"]) and first["image"].size == (112, 112)
    presence_rows = to_qa_rows(dataset, kind="presence")
    assert len(presence_rows["test"]) == sum(len(q) for q in dataset["test"]["presence_questions"])
    assert set(presence_rows["train"]["answer"]) == {"yes", "no"}
    text_rows = to_qa_rows(train, kind="text")
    assert text_rows["answer"] == [t for t in train["text"] if t]
    captions = to_caption_rows(train)
    assert captions.column_names == ["image", "text"] and captions["text"] == train["caption"]
    with pytest.raises(ValueError, match="kind"):
        to_qa_rows(train, kind="colour")


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="num_train"):
        build_synthetic_dataset(-1, 0, 0)
    with pytest.raises(ValueError, match="image_size"):
        generate_scene(0, image_size=8)
    with pytest.raises(ValueError, match="split"):
        scene_seed_for(0, "dev", 0)


def test_text_tokenizer_round_trip_and_special_tokens(dataset, tmp_path):
    from transformers import AutoTokenizer

    texts = list(scene_texts(dataset["train"]))
    tokenizer = train_text_tokenizer(texts, vocab_size=320)
    assert tokenizer.get_vocab() == train_text_tokenizer(texts, vocab_size=320).get_vocab()
    assert len(tokenizer) <= 320
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id] == [
        0,
        1,
        2,
        3,
    ]
    assert tokenizer.convert_tokens_to_ids(["<image>", "[IMG]", "[/IMG]"]) == [4, 5, 6]
    assert set(tokenizer.extra_special_tokens) == {"<image>", "[IMG]", "[/IMG]"}

    text = 'Three RED circles on a grey background, with "A7Q" written on it.'
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.lower()
    with_image = tokenizer("<image> How many stars are there?").input_ids
    assert with_image[:2] == [tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids("<image>")]

    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(text).input_ids == ids and reloaded.pad_token == "<pad>"
    with pytest.raises(ValueError, match="special_tokens"):
        train_text_tokenizer(texts, special_tokens=["<s>", "</s>", "<unk>"])


def test_binding_questions_need_colour_bound_to_shape(scenes):
    kinds, sharing_absent = [], 0
    for scene in scenes[:60]:
        objects = scene.layout.objects
        present = {(o.colour, o.shape) for o in objects}
        rng = np.random.default_rng(scene.scene_seed)
        questions = binding_questions_for(objects, rng, 6)
        assert len(questions) == (6 if objects else 0)
        for question in questions:
            pair = (question["colour"], question["shape"])
            assert f"{question['colour']} " in question["question"]
            if question["kind"] == "presence":
                assert question["answer"] == ("yes" if pair in present else "no")
            else:
                assert question["answer"] == count_matching(objects, question["shape"], question["colour"])
            if pair not in present:  # an absent pair always shares its colour or its shape with the scene
                assert any(pair[0] == colour or pair[1] == shape for colour, shape in present)
                sharing_absent += 1
            kinds.append(question["kind"])
    assert 0.3 < kinds.count("count") / len(kinds) < 0.7
    assert sharing_absent > len(kinds) / 4
    again = binding_questions_for(scenes[0].layout.objects, np.random.default_rng(scenes[0].scene_seed), 6)
    assert again == binding_questions_for(scenes[0].layout.objects, np.random.default_rng(scenes[0].scene_seed), 6)
