"""Synthetic scenes: determinism, splits, question/caption consistency, label masks, patch labels, vocabulary."""

import datasets
import numpy as np
import pytest

from gvt.data import (
    BACKGROUND_CLASS_ID,
    NUM_PATCH_CLASSES,
    OBJECT_COLOURS,
    SHAPE_NAMES,
    SHIFTED_SCENE_CONFIG,
    SPLIT_NAMES,
    TEXT_CLASS_ID,
    SceneBackground,
    SceneObject,
    SyntheticSceneConfig,
    binding_questions_for,
    build_synthetic_dataset,
    generate_scene,
    object_class_id,
    patch_class_names,
    patch_labels,
    render_label_mask,
    scene_patch_targets,
    scene_seed_for,
    scene_texts,
    to_caption_rows,
    to_qa_rows,
    train_text_tokenizer,
    visible_object_colours,
)
from gvt.data.bitmap_text import text_ink_mask
from gvt.data.scene_language import background_phrase, count_matching
from gvt.data.scene_layout import (
    SIZE_REGIMES,
    _sample_background,
    _sample_focused_kinds,
    _sample_text,
    sample_layout,
)
from gvt.data.scene_rendering import render_background
from gvt.data.scene_vocabulary import (
    BACKGROUND_COLOURS,
    DARK_LUMINANCE,
    colour_distance,
    luminance,
    number_word,
    plural,
)

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


def test_text_ink_contrasts_with_light_and_dark_backgrounds(scenes):
    seen = set()
    for scene in scenes:
        if not scene.text:
            continue
        x0, y0, x1, y1 = scene.text_bbox
        ink = text_ink_mask(scene.text, scene.layout.text.scale)
        region = luminance(_pixels(scene.image)[y0:y1, x0:x1].astype(float).transpose(2, 0, 1))
        background = luminance(render_background(scene.layout.background, 112)[y0:y1, x0:x1].mean(axis=(0, 1)))
        ink_level = region[ink].mean()
        if background < DARK_LUMINANCE:
            assert ink_level >= 190, (scene.scene_seed, ink_level)  # light ink on a dark background, never black
        else:
            assert ink_level <= 65, (scene.scene_seed, ink_level)
        assert abs(region[~ink].mean() - ink_level) > 90  # MIN_TEXT_CONTRAST, give or take noise and rounding
        seen.add(background < DARK_LUMINANCE)
    assert seen == {True, False}


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


# The benchmark's distribution: count-focused scenes, light to dark backgrounds, per-scene sizes and overlap, and
# the shifted test split.


@pytest.fixture(scope="module")
def many_scenes():
    return [generate_scene(scene_seed_for(0, "train", index)) for index in range(600)]


def _histogram(answers: list[int], top: int = 8) -> np.ndarray:
    return np.bincount(answers, minlength=top + 1)[: top + 1] / len(answers)


def test_first_count_answers_are_flat_over_zero_to_eight(many_scenes):
    answers = [scene.count_questions[0]["answer"] for scene in many_scenes]
    assert max(answers) == 8
    shares = _histogram(answers)
    assert shares.min() > 0.06 and shares.max() < 0.17, shares.round(3)
    focused = [scene for scene in many_scenes if scene.layout.focus is not None]
    assert 0.5 < len(focused) / len(many_scenes) < 0.7
    asked = {(q["shape"] != "", q["colour"] != "") for s in focused for q in s.count_questions[:1]}
    assert asked == {(True, True), (True, False), (False, True)}  # pair, shape only, colour only
    for scene in focused:  # the first question asks about the focus kind, whatever filter words it
        shape, colour = scene.layout.focus
        first = scene.count_questions[0]
        assert first["shape"] in ("", shape) and first["colour"] in ("", colour)
        assert first["answer"] == count_matching(scene.layout.objects, shape, colour)


def _replayed_focus_count(scene_seed: int, image_size: int, config: SyntheticSceneConfig) -> int:
    """The n a focused scene drew, by replaying the layout stream's first draws (as `sample_layout` makes them)."""
    rng = np.random.default_rng(np.random.SeedSequence(scene_seed).spawn(3)[0])
    background = _sample_background(rng, image_size, config)
    _sample_text(rng, image_size, config)
    rng.random()  # focus or general mix
    _, required, _ = _sample_focused_kinds(rng, visible_object_colours(background, config.min_object_contrast), config)
    return len(required)


@pytest.mark.parametrize("image_size", [32, 112])
def test_focused_scenes_hold_n_objects_of_their_kind_even_when_crowded(image_size):
    crowded = SyntheticSceneConfig(
        count_focus_probability=1.0, size_regime_weights=(0, 1, 0), overlap_probability=0.0, text_probability=1.0
    )
    smallest = int(np.ceil(crowded.min_object_fraction * image_size))
    held = []
    for index in range(150):
        scene_seed = scene_seed_for(1, "train", index)
        scene = generate_scene(scene_seed, image_size, crowded)
        shape, colour = scene.layout.focus
        count = count_matching(scene.layout.objects, shape, colour)
        assert count == _replayed_focus_count(scene_seed, image_size, crowded)
        assert all(o.bbox[2] - o.bbox[0] >= smallest for o in scene.layout.objects)
        held.append(count)
    assert max(held) == crowded.max_focus_count and held.count(8) > 5
    with pytest.raises(RuntimeError, match="Could not place"):
        for index in range(20):
            sample_layout(
                np.random.default_rng(index),
                112,
                SyntheticSceneConfig(count_focus_probability=1.0, max_focus_count=40),
            )


def test_objects_are_visible_on_every_background(many_scenes):
    jitter_reach = COLOUR_TOLERANCE * np.sqrt(3)
    for scene in many_scenes:
        background = scene.layout.background
        visible = visible_object_colours(background, SyntheticSceneConfig().min_object_contrast)
        assert {o["colour"] for o in scene.objects} <= set(visible)
        if background.is_dark:
            assert "black" not in visible
        if background.kind == "flat" and scene.objects:
            mask, pixels = scene.label_mask(), _pixels(scene.image).astype(float)
            backdrop = np.array(BACKGROUND_COLOURS[background.colour])
            for o in scene.objects:
                covered = pixels[mask == object_class_id(o["shape"], o["colour"])]
                assert np.linalg.norm(covered - backdrop, axis=1).min() > 90 - jitter_reach
    for name in ("navy", "dark grey", "maroon", "brown", "dark green"):
        flat = SceneBackground("flat", name)
        assert "black" not in visible_object_colours(flat, 90)
        assert all(
            colour_distance(OBJECT_COLOURS[c], BACKGROUND_COLOURS[name]) >= 90
            for c in visible_object_colours(flat, 90)
        )
    gradient = SceneBackground("gradient", "white", end_colour="navy", direction="vertical")
    middle = (np.array(BACKGROUND_COLOURS["white"]) + np.array(BACKGROUND_COLOURS["navy"])) / 2
    assert all(colour_distance(OBJECT_COLOURS[c], middle) >= 90 for c in visible_object_colours(gradient, 90))


def test_backgrounds_range_from_light_to_dark_and_textured(many_scenes):
    backgrounds = [scene.layout.background for scene in many_scenes]
    assert 0.22 < np.mean([b.is_dark for b in backgrounds]) < 0.38
    assert 0.17 < np.mean([b.kind == "textured" for b in backgrounds]) < 0.33
    textured = next(b for b in backgrounds if b.kind == "textured")
    pixels = render_background(textured, 112)
    assert np.abs(pixels - np.array(BACKGROUND_COLOURS[textured.colour])).max() == textured.shade
    assert {b.pattern for b in backgrounds if b.kind == "textured"} == {"stripes", "checks"}
    phrases = {background_phrase(b) for b in backgrounds}
    assert any(p.startswith("a striped ") for p in phrases) and any(p.startswith("a checked ") for p in phrases)
    assert "a navy background" in phrases or "a noisy navy background" in phrases


def test_sizes_and_overlap_vary_per_scene(many_scenes):
    config, size = SyntheticSceneConfig(), 112
    smallest, largest = int(np.ceil(config.min_object_fraction * size)), int(config.max_object_fraction * size)
    third = round((largest - smallest) / 3)
    all_small = all_large = 0
    overlap_scenes = 0
    for scene in many_scenes:
        boxes = np.array([o.bbox for o in scene.layout.objects]).reshape(-1, 4)
        sides = boxes[:, 2] - boxes[:, 0]
        assert np.array_equal(sides, boxes[:, 3] - boxes[:, 1]) and np.all((sides >= smallest) & (sides <= largest))
        if len(sides) >= 3:
            all_small += sides.max() <= smallest + third
            all_large += sides.min() >= largest - third
        allowed = scene.layout.max_overlap_fraction
        overlap_scenes += allowed > 0
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                width = min(a[2], b[2]) - max(a[0], b[0])
                height = min(a[3], b[3]) - max(a[1], b[1])
                shared = max(width, 0) * max(height, 0) / min(np.prod(a[2:] - a[:2]), np.prod(b[2:] - b[:2]))
                assert shared <= allowed, (scene.scene_seed, shared, allowed)  # 0 in a no-overlap scene
    assert all_small > 30 and all_large > 30
    assert 0.4 < overlap_scenes / len(many_scenes) < 0.6
    assert SIZE_REGIMES == ("small", "large", "mixed")


def test_every_object_gets_its_own_anchor_patch(many_scenes):
    for scene in many_scenes[:200]:
        keep, code_labels, _, _ = scene_patch_targets(scene.objects, scene.text_bbox, 112, 14)
        assert keep.sum() == len(scene.objects) + bool(scene.text)
        anchored = sorted(code_labels[keep == 1].tolist())
        expected = [object_class_id(o["shape"], o["colour"]) for o in scene.objects] + [TEXT_CLASS_ID] * bool(
            scene.text
        )
        assert anchored == sorted(expected)
    # two overlapping squares with the same centre patch: the top one keeps it, the other moves inside its box
    below, above = (
        {"shape": "square", "colour": "red", "bbox": [28, 28, 48, 48]},
        {"shape": "square", "colour": "blue", "bbox": [34, 34, 54, 54]},
    )
    keep, code_labels, _, _ = scene_patch_targets([below, above], None, 112, 14)
    assert keep.sum() == 2 and code_labels[3 * 8 + 3] == object_class_id("square", "blue")
    assert code_labels[2 * 8 + 2] == object_class_id("square", "red")


def test_shifted_split_has_its_own_seeds_and_a_shifted_distribution():
    assert SPLIT_NAMES[-1] == "test_shifted" and SPLIT_NAMES[:3] == ("train", "validation", "test")
    with_shifted = build_synthetic_dataset(4, 2, 2, seed=0, num_shifted=6)
    without = build_synthetic_dataset(4, 2, 2, seed=0)
    assert list(with_shifted) == ["train", "validation", "test", "test_shifted"] and list(without) == list(
        SPLIT_NAMES[:3]
    )
    for split in without:
        assert with_shifted[split]["scene_seed"] == without[split]["scene_seed"]
        assert with_shifted[split]["caption"] == without[split]["caption"]
    shifted_seeds = with_shifted["test_shifted"]["scene_seed"]
    assert len(set(shifted_seeds)) == 6
    assert not set(shifted_seeds) & {s for split in without for s in without[split]["scene_seed"]}
    assert shifted_seeds == [scene_seed_for(0, "test_shifted", index) for index in range(6)]
    again = generate_scene(shifted_seeds[0], config=SHIFTED_SCENE_CONFIG)
    assert np.array_equal(_pixels(again.image), _pixels(with_shifted["test_shifted"][0]["image"]))
    assert SHIFTED_SCENE_CONFIG == SyntheticSceneConfig().shifted()
    with pytest.raises(ValueError, match="num_shifted"):
        build_synthetic_dataset(1, 0, 0, num_shifted=-1)

    shifted = [generate_scene(scene_seed_for(0, "test_shifted", i), config=SHIFTED_SCENE_CONFIG) for i in range(300)]
    assert all(scene.layout.focus is not None for scene in shifted)
    backgrounds = [scene.layout.background for scene in shifted]
    assert 0.5 < np.mean([b.is_dark for b in backgrounds]) < 0.7
    assert 0.5 < np.mean([b.kind == "textured" for b in backgrounds]) < 0.7
    shares = _histogram([scene.count_questions[0]["answer"] for scene in shifted])
    assert shares.min() > 0.05 and shares.max() < 0.18, shares.round(3)
    assert 0.7 < np.mean([scene.layout.max_overlap_fraction > 0 for scene in shifted]) < 0.9
