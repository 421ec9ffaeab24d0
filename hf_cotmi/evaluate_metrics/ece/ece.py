"""Expected calibration error (ECE) as a Hugging Face ``evaluate`` metric, shipped inside hf-cotmi.

Load it offline from its path: ``evaluate.load(hf_cotmi.ece_metric_path())``. The maths is
``hf_cotmi.calibration.expected_calibration_error``; this file only adapts it to ``evaluate``.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from hf_cotmi.calibration import average_confidence, check_binning, expected_calibration_error, refuse_text

# how far a probability vector's sum may stray from 1: float32 (even bfloat16) softmax outputs over a large
# vocabulary stay well within it; unnormalised scores, single probabilities and independent sigmoids do not
PROBABILITY_SUM_TOLERANCE = 1e-2

_CITATION = """\
@inproceedings{guo2017calibration,
  title={On Calibration of Modern Neural Networks},
  author={Guo, Chuan and Pleiss, Geoff and Sun, Yu and Weinberger, Kilian Q.},
  booktitle={Proceedings of the 34th International Conference on Machine Learning},
  year={2017}
}
@inproceedings{chen2024distilling,
  title={Learning to Maximize Mutual Information for Chain-of-Thought Distillation},
  author={Chen, Xin and Huang, Hanxian and Gao, Yanjun and Wang, Yi and Zhao, Jishen and Ding, Ke},
  booktitle={Findings of the Association for Computational Linguistics: ACL 2024},
  year={2024}
}
"""

_DESCRIPTION = """\
Expected calibration error: predictions are grouped into bins by confidence, and ECE is the
count-weighted mean of |accuracy(bin) - mean confidence(bin)|, a fraction in [0, 1]:

    ECE = sum_m |B_m| / N * | acc(B_m) - conf(B_m) |

Equal-width bins ("uniform", the default) agree with torchmetrics' L1 calibration error; "quantile" bins
hold (about) equally many predictions. The average confidence is returned as well.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: either the confidence of each prediction (a float in [0, 1]), or a vector of class
        probabilities per example (the confidence is its maximum, the prediction its arg-max).
    references: with confidences, whether each prediction was correct (0 or 1); with probability vectors,
        the gold class index (an integer).
    n_bins (int): number of bins (default: the value given to ``evaluate.load``, else 10).
    binning (str): "uniform" or "quantile" (default: the value given to ``evaluate.load``, else "uniform").
Returns:
    ece (float): expected calibration error in [0, 1].
    avg_confidence (float): mean confidence in [0, 1].
Raises:
    ValueError: on empty input, text ("0.7"), NaN, confidences outside [0, 1], references other than 0/1
        (confidences), probability vectors with entries outside [0, 1] or a sum other than 1 (softmax logits
        first), gold class indices that are not integers or fall outside the vector, and invalid
        ``n_bins``/``binning`` (at ``evaluate.load`` already when given there).
Examples:
    >>> import evaluate, hf_cotmi
    >>> ece = evaluate.load(hf_cotmi.ece_metric_path())
    >>> ece.compute(predictions=[0.9, 0.6], references=[1, 0])
    {'ece': 0.35, 'avg_confidence': 0.75}
    >>> ece.compute(predictions=[[0.1, 0.9], [0.6, 0.4]], references=[1, 1])
    {'ece': 0.35, 'avg_confidence': 0.75}
"""


def _refuse_empty(**columns) -> None:
    """Raise when a column that was passed holds no value (``evaluate`` would fail with an IndexError), or
    holds text (``"0.7"``), which ``evaluate`` would read as the number it spells."""
    for name, column in columns.items():
        try:
            empty = column is not None and len(column) == 0
        except TypeError:  # a scalar: left to evaluate's own format check
            empty = False
        if empty:
            raise ValueError(f"`{name}` is empty; expected at least one prediction")
        refuse_text(column, name)


def _gold_class(reference: float, size: int, index: int) -> int:
    """The gold class index ``reference`` of the probability vector at ``index``, checked against its ``size``."""
    if not float(reference).is_integer():
        raise ValueError(
            "`references`: the gold class index of each probability vector must be an integer; "
            f"got {float(reference)!r} at index {index}"
        )
    gold = int(reference)
    # a gold class outside the vector (SNLI's -1 "no gold label") would count as a wrong answer
    if not 0 <= gold < size:
        raise ValueError(
            f"`references` must be the gold class index of each probability vector, in "
            f"[0, {size}) at index {index}; got {gold}"
            + (" (an empty probability vector)" if size == 0 else "")
            + ". Drop examples without a gold label first"
        )
    return gold


def _check_probability_vector(probabilities: np.ndarray, index: int) -> None:
    """Refuse a vector that is not a probability distribution (logits, scores, a lone probability)."""
    if np.isnan(probabilities).any():
        return  # reported, with its index, as a NaN confidence
    if probabilities.min() < 0.0 or probabilities.max() > 1.0:
        raise ValueError(
            f"`predictions` must be probability vectors with entries in [0, 1]; the vector at index {index} "
            f"has {float(probabilities.min())!r}..{float(probabilities.max())!r}. Apply a softmax to logits first"
        )
    total = float(np.sum(probabilities))
    if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise ValueError(
            f"`predictions` must be probability vectors that sum to 1 (within {PROBABILITY_SUM_TOLERANCE}); "
            f"the vector at index {index} sums to {total:.6g}. Apply a softmax to logits (or scores) first, "
            "or pass the confidence of each prediction with 0/1 correctness as `references`"
        )


def top_label_confidences(predictions, references) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (the largest probability) and correctness (arg-max == gold) of each probability vector.

    Args:
        predictions: one class-probability vector per example (lengths may differ between examples).
        references: the gold class index of each example.

    Returns:
        ``(confidences, correct)``, float64 and bool arrays with one value per example.

    Raises:
        ValueError: for a vector that is not a probability distribution, or a gold index that is not an
            integer in ``[0, len(vector))``.

    Examples:
        >>> top_label_confidences([[0.1, 0.9], [0.6, 0.4]], [1, 1])
        (array([0.9, 0.6]), array([ True, False]))
    """
    confidences, correct = [], []
    for index, (vector, reference) in enumerate(zip(predictions, references)):
        probabilities = np.asarray(vector, dtype=np.float64)
        gold = _gold_class(reference, probabilities.size, index)
        _check_probability_vector(probabilities, index)
        confidences.append(probabilities.max())
        correct.append(int(probabilities.argmax()) == gold)
    return np.array(confidences, dtype=np.float64), np.array(correct, dtype=bool)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ECE(evaluate.Metric):
    """Expected calibration error; ``evaluate.load(path, n_bins=15, binning="quantile")`` sets defaults."""

    def __init__(self, *args, n_bins: int = 10, binning: str = "uniform", **kwargs):
        check_binning(n_bins, binning)  # at load time, not at the first evaluation hours later
        self.default_n_bins = n_bins
        self.default_binning = binning
        super().__init__(*args, **kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                # confidence of each prediction, and whether it was correct
                # (float, so that a reference such as 0.7 reaches the 0/1 check instead of being cut to 0)
                datasets.Features(
                    {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
                ),
                # class probabilities, and the gold class (float, so that 1.5 is refused, not cut to 1)
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Value("float64"),
                    }
                ),
            ],
            reference_urls=["https://arxiv.org/abs/1706.04599"],
        )

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and reference; text (``"0.7"``) raises a ValueError naming it."""
        _refuse_empty(prediction=[prediction], reference=[reference])
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references; an empty one raises a ValueError naming it."""
        _refuse_empty(predictions=predictions, references=references)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Score the given and the added predictions; raises a ValueError when there is none to score."""
        _refuse_empty(predictions=predictions, references=references)
        # `writer` is evaluate's store of added batches (None until the first one); when a version of evaluate
        # names it otherwise, the check is skipped
        if predictions is None and references is None and getattr(self, "writer", False) is None:
            raise ValueError(
                "nothing to score: no `predictions` were passed to `compute` and none were added with "
                "`add_batch`/`add` since the last `compute`"
            )
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(self, predictions, references, n_bins=None, binning=None):
        n_bins = self.default_n_bins if n_bins is None else n_bins
        binning = self.default_binning if binning is None else binning
        if len(predictions) and np.ndim(predictions[0]) == 1:  # probability vectors
            confidences, correct = top_label_confidences(predictions, references)
        else:
            confidences = np.asarray(predictions, dtype=np.float64)
            correct = np.asarray(references)
        return {
            "ece": expected_calibration_error(confidences, correct, n_bins=n_bins, binning=binning),
            "avg_confidence": average_confidence(confidences),
        }
