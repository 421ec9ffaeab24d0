"""Expected calibration error (ECE) as a Hugging Face ``evaluate`` metric, shipped inside hf-cotmi.

Load it offline from its path: ``evaluate.load(hf_cotmi.ece_metric_path())``. The maths is
``hf_cotmi.calibration.expected_calibration_error``; this file only adapts it to ``evaluate``.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from hf_cotmi.calibration import average_confidence, expected_calibration_error

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
        the gold class index.
    n_bins (int): number of bins (default: the value given to ``evaluate.load``, else 10).
    binning (str): "uniform" or "quantile" (default: the value given to ``evaluate.load``, else "uniform").
Returns:
    ece (float): expected calibration error in [0, 1].
    avg_confidence (float): mean confidence in [0, 1].
Examples:
    >>> import evaluate, hf_cotmi
    >>> ece = evaluate.load(hf_cotmi.ece_metric_path())
    >>> ece.compute(predictions=[0.9, 0.6], references=[1, 0])
    {'ece': 0.35, 'avg_confidence': 0.75}
    >>> ece.compute(predictions=[[0.1, 0.9], [0.6, 0.4]], references=[1, 1])
    {'ece': 0.35, 'avg_confidence': 0.75}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ECE(evaluate.Metric):
    """Expected calibration error; ``evaluate.load(path, n_bins=15, binning="quantile")`` sets defaults."""

    def __init__(self, *args, n_bins: int = 10, binning: str = "uniform", **kwargs):
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
                # class probabilities, and the gold class
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float64")),
                        "references": datasets.Value("int32"),
                    }
                ),
            ],
            reference_urls=["https://arxiv.org/abs/1706.04599"],
        )

    def _compute(self, predictions, references, n_bins=None, binning=None):
        n_bins = self.default_n_bins if n_bins is None else n_bins
        binning = self.default_binning if binning is None else binning
        if len(predictions) and np.ndim(predictions[0]) == 1:  # probability vectors
            probabilities = [np.asarray(p, dtype=np.float64) for p in predictions]
            for i, (p, r) in enumerate(zip(probabilities, references)):
                # a gold class outside the vector (SNLI's -1 "no gold label") would count as a wrong answer
                if not 0 <= int(r) < p.size:
                    raise ValueError(
                        f"`references` must be the gold class index of each probability vector, in "
                        f"[0, {p.size}) at index {i}; got {int(r)}"
                        + (" (an empty probability vector)" if p.size == 0 else "")
                        + ". Drop examples without a gold label first"
                    )
            confidences = np.array([p.max() for p in probabilities])
            correct = np.array([int(p.argmax()) == int(r) for p, r in zip(probabilities, references)])
        else:
            confidences = np.asarray(predictions, dtype=np.float64)
            correct = np.asarray(references)
        return {
            "ece": expected_calibration_error(confidences, correct, n_bins=n_bins, binning=binning),
            "avg_confidence": average_confidence(confidences),
        }
