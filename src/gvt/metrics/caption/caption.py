"""Caption metrics: corpus BLEU-1..4 (Papineni et al., 2002) and CIDEr-D (Vedantam et al., 2015).

Written from the published definitions; self-contained `evaluate` module: load it with
`evaluate.load(<this directory>)` or `gvt.metrics.load_metric("caption")`.
"""

import math
import re
from collections import Counter

import datasets
import evaluate

MAX_NGRAM = 4
CIDER_SIGMA = 6.0
"""Standard deviation of CIDEr-D's Gaussian length penalty, in words."""
CIDER_SCALE = 10.0
"""coco-caption reports CIDEr-D times ten."""
NON_WORD_CHARACTERS = re.compile(r"[^\w\s]|_")

_DESCRIPTION = """\
Corpus-level BLEU-1..4 (clipped n-gram precisions summed over the corpus, uniform geometric mean, brevity penalty
against the closest reference length, no smoothing) and CIDEr-D (n = 1..4, tf-idf n-gram vectors with document
frequencies taken from the references of the evaluated set, hypothesis weights clipped by the reference's,
Gaussian length penalty with sigma = 6, averaged over references and n, times 10 as in coco-caption).
Text is lowercased, punctuation becomes spaces, and words are split on whitespace.
"""
_CITATION = """\
@inproceedings{papineni2002bleu,
  title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={ACL},
  year={2002}
}
@inproceedings{vedantam2015cider,
  title={CIDEr: Consensus-based Image Description Evaluation},
  author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={CVPR},
  year={2015}
}
"""
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`, or `list` of `str`): the reference caption(s) of each image.
Returns:
    bleu (`float`): BLEU-4.
    bleu_1 .. bleu_4 (`float`): cumulative BLEU up to n-grams of that order.
    brevity_penalty (`float`), length_ratio (`float`): BLEU's length terms.
    cider (`float`): CIDEr-D (x10). Note that it needs at least two images: with one, every idf is zero.
Examples:
    >>> metric = gvt.metrics.load_metric("caption")
    >>> metric.compute(predictions=["a red circle"], references=[["a red circle"]])["bleu_1"]
    1.0
"""


def tokenize(text: str) -> list[str]:
    """Lowercase, punctuation to spaces, split on whitespace."""
    return NON_WORD_CHARACTERS.sub(" ", text.lower()).split()


def ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(hypotheses: list[list[str]], references: list[list[list[str]]]) -> dict[str, float]:
    """Cumulative corpus BLEU-1..4 of tokenized hypotheses against their tokenized references."""
    matches = [0] * MAX_NGRAM
    totals = [0] * MAX_NGRAM
    hypothesis_length = reference_length = 0
    for hypothesis, refs in zip(hypotheses, references):
        hypothesis_length += len(hypothesis)
        # Closest reference length; on a tie, the shorter one.
        reference_length += min((len(ref) for ref in refs), key=lambda length: (abs(length - len(hypothesis)), length))
        for n in range(1, MAX_NGRAM + 1):
            counts = ngram_counts(hypothesis, n)
            max_reference_counts: Counter = Counter()
            for ref in refs:
                max_reference_counts |= ngram_counts(ref, n)
            matches[n - 1] += sum(min(count, max_reference_counts[gram]) for gram, count in counts.items())
            totals[n - 1] += max(len(hypothesis) - n + 1, 0)
    if hypothesis_length == 0:
        brevity_penalty = 0.0
    elif hypothesis_length > reference_length:
        brevity_penalty = 1.0
    else:
        brevity_penalty = math.exp(1 - reference_length / hypothesis_length)
    scores: dict[str, float] = {}
    log_precision_sum = 0.0
    for n in range(1, MAX_NGRAM + 1):
        if matches[n - 1] == 0 or log_precision_sum == -math.inf:
            log_precision_sum = -math.inf
            scores[f"bleu_{n}"] = 0.0
            continue
        log_precision_sum += math.log(matches[n - 1] / totals[n - 1])
        scores[f"bleu_{n}"] = brevity_penalty * math.exp(log_precision_sum / n)
    scores["bleu"] = scores[f"bleu_{MAX_NGRAM}"]
    scores["brevity_penalty"] = brevity_penalty
    scores["length_ratio"] = hypothesis_length / reference_length if reference_length else 0.0
    return scores


def _tfidf(words: list[str], document_frequency: list[Counter], log_num_documents: float) -> list[dict]:
    """Per n: {n-gram: tf * (log N - log max(1, df))}."""
    vectors = []
    for n in range(1, MAX_NGRAM + 1):
        counts = ngram_counts(words, n)
        vectors.append(
            {
                gram: count * (log_num_documents - math.log(max(1.0, document_frequency[n - 1][gram])))
                for gram, count in counts.items()
            }
        )
    return vectors


def _norm(vector: dict) -> float:
    return math.sqrt(sum(value * value for value in vector.values()))


def corpus_cider_d(hypotheses: list[list[str]], references: list[list[list[str]]]) -> float:
    """Mean CIDEr-D (x10) of tokenized hypotheses; idf from the references of this set."""
    document_frequency = [Counter() for _ in range(MAX_NGRAM)]
    for refs in references:
        for n in range(1, MAX_NGRAM + 1):
            document_frequency[n - 1].update({gram for ref in refs for gram in ngram_counts(ref, n)})
    log_num_documents = math.log(len(references))
    scores = []
    for hypothesis, refs in zip(hypotheses, references):
        hypothesis_vectors = _tfidf(hypothesis, document_frequency, log_num_documents)
        per_reference = []
        for ref in refs:
            reference_vectors = _tfidf(ref, document_frequency, log_num_documents)
            length_penalty = math.exp(-((len(hypothesis) - len(ref)) ** 2) / (2 * CIDER_SIGMA**2))
            similarity = 0.0
            for hyp_vector, ref_vector in zip(hypothesis_vectors, reference_vectors):
                denominator = _norm(hyp_vector) * _norm(ref_vector)
                if denominator == 0:
                    continue
                # CIDEr-D clips the hypothesis weights by the reference's, so repeating a word gains nothing.
                overlap = sum(
                    min(weight, ref_vector[gram]) * ref_vector[gram]
                    for gram, weight in hyp_vector.items()
                    if gram in ref_vector
                )
                similarity += length_penalty * overlap / denominator
            per_reference.append(similarity / MAX_NGRAM)
        scores.append(CIDER_SCALE * sum(per_reference) / len(per_reference))
    return sum(scores) / len(scores)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Caption(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions: list[str], references: list) -> dict[str, float]:
        if not predictions:
            raise ValueError("caption needs at least one prediction.")
        reference_lists = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
        if any(len(refs) == 0 for refs in reference_lists):
            raise ValueError("Every prediction needs at least one reference caption.")
        hypotheses = [tokenize(prediction) for prediction in predictions]
        tokenized_references = [[tokenize(ref) for ref in refs] for refs in reference_lists]
        scores = corpus_bleu(hypotheses, tokenized_references)
        scores["cider"] = corpus_cider_d(hypotheses, tokenized_references)
        return scores
