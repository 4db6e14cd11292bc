"""Object counting (GVTBench OC): accuracy, MAE and RMSE of the first number in each free-form answer.

Self-contained `evaluate` module: load it with `evaluate.load(<this directory>)` or `gvt.metrics.load_metric`.
"""

import math
import re

import datasets
import evaluate

NUMBER_WORDS = {
    "none": 0,
    "no": 0,
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
UNPARSED_COUNT = 0
"""Count assumed when an answer holds no number at all."""
NUMBER_PATTERN = re.compile(r"\b(\d+|" + "|".join(NUMBER_WORDS) + r")\b")

_DESCRIPTION = """\
Object counting as in GVT's benchmark: number words ("none", "no", "zero" .. "ten") are read as digits, the first
integer of the lowercased answer is the predicted count (0 when there is none), and exact-match accuracy, mean
absolute error and root-mean-square error against the true counts are reported.
"""
_CITATION = """\
@article{wang2023gvt,
  title={What Makes for Good Visual Tokenizers for Large Language Models?},
  author={Wang, Guangzhi and Ge, Yixiao and Ding, Xiaohan and Kankanhalli, Mohan and Shan, Ying},
  journal={arXiv preprint arXiv:2305.12223},
  year={2023}
}
"""
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): free-form answers, e.g. "There are three red circles."
    references (`list` of `int`): true counts.
Returns:
    accuracy (`float`): share of answers whose count equals the reference.
    mae (`float`): mean absolute error of the counts.
    rmse (`float`): root-mean-square error of the counts.
    accuracy_by_count (`dict`): per true count (a string key, "0", "1", ...): accuracy on those questions.
    mean_count_by_count (`dict`): per true count: the mean predicted count (under- or over-counting).
    support_by_count (`dict`): per true count: the number of questions.
Examples:
    >>> metric = gvt.metrics.load_metric("object_counting")
    >>> metric.compute(predictions=["two", "There are 3 cats", "none", "7"], references=[2, 3, 1, 5])
    {'accuracy': 0.5, 'mae': 0.75, 'rmse': 1.118033988749895, 'accuracy_by_count': {'1': 0.0, '2': 1.0, '3': 1.0, \
'5': 0.0}, 'mean_count_by_count': {'1': 0.0, '2': 2.0, '3': 3.0, '5': 7.0}, 'support_by_count': {'1': 1, '2': 1, \
'3': 1, '5': 1}}
"""


def parse_count(answer: str) -> int:
    """First integer of `answer`, number words read as digits; `UNPARSED_COUNT` when there is none."""
    match = NUMBER_PATTERN.search(answer.lower())
    if match is None:
        return UNPARSED_COUNT
    token = match.group(1)
    return NUMBER_WORDS[token] if token in NUMBER_WORDS else int(token)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ObjectCounting(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[int]) -> dict[str, float]:
        if not predictions:
            raise ValueError("object_counting needs at least one prediction.")
        counts = [parse_count(prediction) for prediction in predictions]
        errors = [count - int(reference) for count, reference in zip(counts, references)]
        by_count: dict[int, list[int]] = {}
        for count, reference in zip(counts, references):
            by_count.setdefault(int(reference), []).append(count)
        true_counts = sorted(by_count)
        return {
            "accuracy": sum(error == 0 for error in errors) / len(errors),
            "mae": sum(abs(error) for error in errors) / len(errors),
            "rmse": math.sqrt(sum(error * error for error in errors) / len(errors)),
            "accuracy_by_count": {
                str(true): sum(count == true for count in by_count[true]) / len(by_count[true]) for true in true_counts
            },
            "mean_count_by_count": {str(true): sum(by_count[true]) / len(by_count[true]) for true in true_counts},
            "support_by_count": {str(true): len(by_count[true]) for true in true_counts},
        }
