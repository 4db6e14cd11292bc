"""GVTBench metrics as local `evaluate` modules: hand-computed values."""

import math

import evaluate
import pytest

from gvt.metrics import METRIC_NAMES, load_metric, metric_path


@pytest.fixture(scope="module")
def object_counting():
    return load_metric("object_counting")


@pytest.fixture(scope="module")
def multiclass_identification():
    return load_metric("multiclass_identification")


@pytest.fixture(scope="module")
def caption():
    return load_metric("caption")


def test_metrics_load_from_local_paths_only():
    for name in METRIC_NAMES:
        assert (metric_path(name) / f"{name}.py").is_file()
    by_script = evaluate.load(str(metric_path("object_counting") / "object_counting.py"))
    assert by_script.compute(predictions=["3"], references=[3])["accuracy"] == 1.0
    with pytest.raises(ValueError, match="Unknown metric"):
        load_metric("bleu")


def test_object_counting_reads_number_words_and_first_integer(object_counting):
    scores = object_counting.compute(predictions=["two", "There are 3 cats", "none", "7"], references=[2, 3, 1, 5])
    # parsed 2, 3, 0, 7 -> errors 0, 0, -1, 2
    assert scores["accuracy"] == 0.5
    assert scores["mae"] == pytest.approx(0.75)
    assert scores["rmse"] == pytest.approx(math.sqrt(5 / 4))


def test_object_counting_per_true_count(object_counting):
    predictions = ["0", "1", "one", "3", "two", "8", "5"]
    references = [0, 0, 1, 3, 3, 8, 8]
    scores = object_counting.compute(predictions=predictions, references=references)
    assert scores["accuracy_by_count"] == {"0": 0.5, "1": 1.0, "3": 0.5, "8": 0.5}
    assert scores["mean_count_by_count"] == {"0": 0.5, "1": 1.0, "3": 2.5, "8": 6.5}
    assert scores["support_by_count"] == {"0": 2, "1": 1, "3": 2, "8": 2}


def test_object_counting_parsing_rules(object_counting):
    predictions = ["Ten.", "No circles here", "I cannot tell", "12 apples, then 3", "Zero", "someone sees FOUR", "6"]
    references = [10, 0, 0, 12, 0, 4, 5]
    scores = object_counting.compute(predictions=predictions, references=references)
    # parsed 10, 0, 0 (no number), 12 (first integer), 0, 4 ("one" inside "someone" is not a word), 6
    assert scores["accuracy"] == pytest.approx(6 / 7)
    assert scores["mae"] == pytest.approx(1 / 7)
    assert scores["rmse"] == pytest.approx(math.sqrt(1 / 7))


def test_multiclass_identification_accuracy(multiclass_identification):
    predictions = ["Yes, there is.", "No.", "I think so", "no, not yes", "YES"]
    references = ["yes", "no", "yes", "no", "No"]
    # first yes/no word: yes, no, none (wrong), no, yes
    assert multiclass_identification.compute(predictions=predictions, references=references) == {"accuracy": 0.6}
    with pytest.raises(ValueError, match="yes' or 'no"):
        multiclass_identification.compute(predictions=["yes"], references=["maybe"])


def test_bleu_of_identical_captions_is_one(caption):
    scores = caption.compute(
        predictions=["A red circle on a grey background."], references=[["a red circle on a grey background"]]
    )
    for n in range(1, 5):
        assert scores[f"bleu_{n}"] == pytest.approx(1.0)
    assert scores["bleu"] == pytest.approx(1.0) and scores["brevity_penalty"] == 1.0


def test_bleu_hand_computed(caption):
    # precisions 5/6, 3/5, 1/4, 0/3; equal lengths, so no brevity penalty
    scores = caption.compute(predictions=["the cat sat on the mat"], references=["the cat is on the mat"])
    assert scores["bleu_1"] == pytest.approx(5 / 6)
    assert scores["bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert scores["bleu_3"] == pytest.approx(0.5)
    assert scores["bleu_4"] == 0.0 == scores["bleu"]


def test_bleu_brevity_penalty_and_closest_reference(caption):
    # hypothesis length 2, closest reference length 6 -> BP = exp(1 - 6 / 2); no trigrams -> BLEU-3 = 0
    scores = caption.compute(
        predictions=["the cat"], references=[["the cat is on the mat", "a cat lies on a red mat"]]
    )
    assert scores["brevity_penalty"] == pytest.approx(math.exp(-2))
    assert scores["bleu_1"] == pytest.approx(math.exp(-2)) and scores["bleu_2"] == pytest.approx(math.exp(-2))
    assert scores["bleu_3"] == 0.0
    # corpus level: counts are summed over sentences before dividing
    scores = caption.compute(predictions=["a b c d", "a x"], references=[["a b c d"], ["a y"]])
    assert scores["bleu_1"] == pytest.approx(5 / 6)
    assert scores["bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 4))


def test_cider_d_hand_computed(caption):
    references = [["a red circle"], ["a blue square"]]
    # identical 3-word captions: similarity 1 for n = 1, 2, 3 and 0 for n = 4 (no 4-grams) -> 10 * 3 / 4
    identical = caption.compute(predictions=["a red circle", "a blue square"], references=references)["cider"]
    assert identical == pytest.approx(7.5)
    # "a red square" vs "a red circle": cosine 1/2 for n = 1, 2, 0 for n = 3 -> 10 * 1 / 4 = 2.5; mean with 7.5
    one_wrong = caption.compute(predictions=["a red square", "a blue square"], references=references)["cider"]
    assert one_wrong == pytest.approx(5.0)
    # "red circle" (one word short): cosines 1 and 1/sqrt(2), times the Gaussian length penalty exp(-1 / 72)
    shorter = caption.compute(predictions=["red circle", "a blue square"], references=references)["cider"]
    expected = (10 * math.exp(-1 / 72) * (1 + 1 / math.sqrt(2)) / 4 + 7.5) / 2
    assert shorter == pytest.approx(expected)
    assert identical > shorter > one_wrong


def test_cider_d_ranks_matching_captions_higher_and_averages_references(caption):
    references = [
        ["three red circles on a grey background", "a grey background with three red circles"],
        ["a blue star and the text 7", "the text 7 next to a blue star"],
        ["an empty white background", "nothing but a white background"],
    ]
    good = ["three red circles on a grey background", "a blue star and the text 7", "an empty white background"]
    bad = ["a green triangle", "two yellow squares", "a black cross"]
    good_scores = caption.compute(predictions=good, references=references)
    bad_scores = caption.compute(predictions=bad, references=references)
    assert good_scores["cider"] > 1.0 > bad_scores["cider"] == 0.0
    assert good_scores["bleu"] > bad_scores["bleu"]
    # a single image: every n-gram has idf log(1 / 1) = 0, so CIDEr-D is 0 by definition
    assert caption.compute(predictions=["a red circle"], references=[["a red circle"]])["cider"] == 0.0
