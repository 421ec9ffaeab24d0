"""The input prefixes of the two Distilling Step-by-Step tasks: the one place that spells them.

Every default in the package (training arguments, features, evaluation, confidence, the model card, the
CLI's fallbacks for a student saved without ``hf_cotmi_config.json``) reads these constants.

Examples:
    >>> from hf_cotmi.prefixes import PREDICT_PREFIX, EXPLAIN_PREFIX
    >>> PREDICT_PREFIX + "2 + 3 = ?", EXPLAIN_PREFIX + "2 + 3 = ?"
    ('predict: 2 + 3 = ?', 'explain: 2 + 3 = ?')
"""

from __future__ import annotations

__all__ = ["PREDICT_PREFIX", "EXPLAIN_PREFIX"]

PREDICT_PREFIX = "predict: "
"""Prefix of the label task's input (``predict: <input>`` -> label)."""

EXPLAIN_PREFIX = "explain: "
"""Prefix of the rationale task's input (``explain: <input>`` -> rationale)."""
