"""Multi-class identification (GVTBench MCI): accuracy of yes/no answers to "Is there a ... in the image?".

Self-contained `evaluate` module: load it with `evaluate.load(<this directory>)` or `gvt.metrics.load_metric`.
"""

import re

import datasets
import evaluate

YES_NO_PATTERN = re.compile(r"\b(yes|no)\b")

_DESCRIPTION = """\
Multi-class identification as in GVT's benchmark: the first "yes" or "no" word of the lowercased answer is the
prediction; an answer with neither counts as wrong. Reports accuracy against "yes"/"no" references.
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
    predictions (`list` of `str`): free-form answers, e.g. "Yes, there is."
    references (`list` of `str`): "yes" or "no" (any case, surrounding text allowed).
Returns:
    accuracy (`float`): share of answers whose first yes/no word matches the reference.
Examples:
    >>> metric = gvt.metrics.load_metric("multiclass_identification")
    >>> metric.compute(predictions=["Yes.", "no", "maybe"], references=["yes", "yes", "no"])
    {'accuracy': 0.3333333333333333}
"""


def parse_yes_no(answer: str) -> str | None:
    """ "yes" or "no", whichever comes first in `answer`; None when neither appears."""
    match = YES_NO_PATTERN.search(answer.lower())
    return match.group(1) if match else None


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MulticlassIdentification(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        if not predictions:
            raise ValueError("multiclass_identification needs at least one prediction.")
        targets = [parse_yes_no(reference) for reference in references]
        if None in targets:
            bad = references[targets.index(None)]
            raise ValueError(f"References must be 'yes' or 'no', got {bad!r}.")
        correct = [parse_yes_no(prediction) == target for prediction, target in zip(predictions, targets)]
        return {"accuracy": sum(correct) / len(correct)}
