"""``evaluate`` metric modules shipped inside hf-cotmi, loadable offline from their paths.

``evaluate.load("accuracy")`` needs the Hugging Face Hub; these modules do not:

    >>> import evaluate  # doctest: +SKIP
    >>> ece = evaluate.load(ece_metric_path())  # doctest: +SKIP
"""

from __future__ import annotations

import os

__all__ = ["ece_metric_path"]


def ece_metric_path() -> str:
    """Path of the expected-calibration-error ``evaluate`` module (``.../evaluate_metrics/ece/ece.py``).

    Pass it to ``evaluate.load`` (no network needed) and combine it with other modules through
    ``evaluate.combine``. Its inputs are either ``predictions`` = confidence of each prediction with
    ``references`` = whether it was correct (0/1), or ``predictions`` = a class-probability vector with
    ``references`` = the gold class index; see the module's README.

    Returns:
        The absolute path of ``ece.py``, as a string.

    Examples:
        >>> ece_metric_path().endswith(os.path.join("evaluate_metrics", "ece", "ece.py"))
        True
        >>> # import evaluate; ece = evaluate.load(ece_metric_path(), n_bins=15)
        >>> # ece.compute(predictions=[0.9, 0.6], references=[1, 0])  ->  {'ece': 0.35, 'avg_confidence': 0.75}
    """
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "ece", "ece.py")
