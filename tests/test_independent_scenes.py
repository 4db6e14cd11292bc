"""benchmarks/independent_scenes.py: the independent scene generator keeps its contract (the counting answer is the
number of objects of the asked kind, no overlap, visible colours, same scenes for the same seed) and its CLI runs end
to end on the shipped default."""

import importlib.util
import json
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from gvt.data.scene_vocabulary import plural
from gvt.default_model import DEFAULT_MODEL_DIR

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "independent_scenes.py"
IMAGE_SIZE = 112


def _load_script():
    spec = importlib.util.spec_from_file_location("independent_scenes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


scenes_module = _load_script()


@pytest.fixture(scope="module", params=["light", "dark"])
def scenes(request):
    return scenes_module.generate_scenes(request.param, 45, IMAGE_SIZE, seed=3)


def test_counting_answer_is_the_number_of_objects_of_the_asked_kind(scenes):
    assert [scene.count_answer for scene in scenes] == [index % 9 for index in range(len(scenes))]
    for scene in scenes:
        colour, shape = scene.asked
        kinds = [(o.colour, o.shape) for o in scene.objects]
        assert kinds.count(scene.asked) == scene.count_answer
        assert len(kinds) - scene.count_answer <= scenes_module.MAX_DISTRACTORS
        assert f"{colour} {plural(shape)}" in scene.count_question
        assert {o.shape for o in scene.objects} <= {"circle", "square", "triangle"}


def test_presence_questions_are_one_yes_and_one_no_about_the_scene(scenes):
    for scene in scenes:
        kinds = {(o.colour, o.shape) for o in scene.objects}
        answers = sorted(answer for _, answer in scene.presence)
        assert answers == (["no", "yes"] if kinds else ["no", "no"])
        for question, answer in scene.presence:
            asked = _pairs_in(question)
            assert len(asked) == 1, question
            assert (asked[0] in kinds) == (answer == "yes"), question
            if answer == "no" and kinds:  # a hard negative: shares a colour or a shape with the scene
                assert any(asked[0][0] == c or asked[0][1] == s for c, s in kinds), question


def _pairs_in(question: str) -> list[tuple[str, str]]:
    from gvt.data.scene_vocabulary import OBJECT_COLOURS

    return [(c, s) for c in OBJECT_COLOURS for s in ("circle", "square", "triangle") if f" {c} {s}" in question]


def test_objects_do_not_overlap_and_fit_the_image(scenes):
    for scene in scenes:
        boxes = [o.box for o in scene.objects]
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE
            assert 14 <= x1 - x0 <= 34 and x1 - x0 == y1 - y0
        assert not any(scenes_module.boxes_overlap(a, b) for a, b in combinations(boxes, 2))


def test_object_colours_are_visible_on_their_background(scenes):
    for scene in scenes:
        pixels = np.asarray(scene.image, dtype=float)
        assert scene.image.size == (IMAGE_SIZE, IMAGE_SIZE)
        assert np.abs(pixels[0, 0] - scene.background_rgb).max() < 12  # corners are background (plus faint noise)
        for obj in scene.objects:
            assert scenes_module.contrast(obj.rgb, scene.background_rgb) >= scenes_module.MIN_CONTRAST
            assert not (scene.family == "dark" and obj.colour == "black")
            x0, y0, x1, y1 = obj.box
            inside = pixels[round(y0 + 0.7 * (y1 - y0)), (x0 + x1) // 2]  # inside every shape of the box
            assert np.abs(inside - obj.rgb).max() < 12


def test_scenes_are_determined_by_the_seed():
    first, again = (scenes_module.generate_scenes("dark", 5, IMAGE_SIZE, seed=7) for _ in range(2))
    other = scenes_module.generate_scenes("dark", 5, IMAGE_SIZE, seed=8)
    assert [s.image.tobytes() for s in first] == [s.image.tobytes() for s in again]
    assert [(s.objects, s.count_question, s.presence) for s in first] == [
        (s.objects, s.count_question, s.presence) for s in again
    ]
    assert [s.image.tobytes() for s in first] != [s.image.tobytes() for s in other]
    assert scenes_module.generate_scenes("dark", 3, IMAGE_SIZE, seed=7)[2].image.tobytes() == first[2].image.tobytes()


def test_unknown_background_family_is_refused():
    with pytest.raises(ValueError, match="Unknown background family 'sepia'"):
        scenes_module.generate_scenes("sepia", 1, IMAGE_SIZE, seed=0)


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="the shipped default is not here")
def test_cli_runs_end_to_end_on_the_shipped_default(tmp_path, capsys):
    out = tmp_path / "results.json"
    results = scenes_module.main(["--scenes", "4", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    printed = capsys.readouterr().out
    for family in ("light", "dark"):
        assert f"### {family} backgrounds: 4 scenes, 4 OC / 8 MCI questions" in printed
        family_results = results["families"][family]
        assert [cell["n"] for cell in family_results["per_count"]] == [1, 1, 1, 1, 0, 0, 0, 0, 0]
        assert 0.0 <= family_results["oc_accuracy"] <= 1.0 and 0.0 <= family_results["mci_accuracy"] <= 1.0
    assert "### families against light" in printed
