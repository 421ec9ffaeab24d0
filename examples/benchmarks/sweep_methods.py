"""The methods a benchmark sweep compares: each one's loss weights and MI settings, and their names.

``replicate.py`` trains them, ``sweep_report.py`` names them in its tables and plots. One place for these
facts, so a new method is one line of :func:`build_methods`.

Example:
    >>> from sweep_methods import build_methods
    >>> build_methods()["dss_mi_masked"].mi_variant
    'masked'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """Loss settings of one compared method."""

    name: str
    title: str
    label_loss_weight: float
    rationale_loss_weight: float
    mi_loss_weight: float
    mi_variant: str = "paper"
    mi_reduction: str = "max"
    mi_divergence: str = "ce"
    single_target: bool = False

    @property
    def uses_rationales(self) -> bool:
        """Whether the method trains on the rationale task."""
        return self.rationale_loss_weight > 0 or self.mi_loss_weight > 0


def build_methods(mi_weight: float = 0.1, dss_weights: tuple[float, float] = (0.5, 0.5)) -> dict[str, Method]:
    """The compared methods, keyed by name.

    Args:
        mi_weight: weight of the MI term in the DSS + MI methods (0.1 in Chen et al. 2024).
        dss_weights: (label, rationale) weights of the DSS methods (0.5, 0.5 in both papers).

    Example:
        >>> sorted(build_methods())  # doctest: +NORMALIZE_WHITESPACE
        ['dss', 'dss_mi_kl', 'dss_mi_masked', 'dss_mi_mean', 'dss_mi_paper', 'finetune', 'single_task']
    """
    label, rationale = dss_weights
    return {
        "finetune": Method("finetune", "Standard fine-tuning", 1.0, 0.0, 0.0),
        "single_task": Method(
            "single_task", "Single-task (rationale + label)", 1.0, 0.0, 0.0, single_target=True
        ),
        "dss": Method("dss", "DSS", label, rationale, 0.0),
        "dss_mi_paper": Method("dss_mi_paper", "DSS + MI (paper)", label, rationale, mi_weight, "paper"),
        "dss_mi_masked": Method("dss_mi_masked", "DSS + MI (masked)", label, rationale, mi_weight, "masked"),
        "dss_mi_mean": Method("dss_mi_mean", "DSS + MI (mean)", label, rationale, mi_weight, "paper", "mean"),
        "dss_mi_kl": Method("dss_mi_kl", "DSS + MI (KL)", label, rationale, mi_weight, "paper", "max", "kl"),
    }


METHOD_NAMES = tuple(build_methods())
METHOD_TITLES = {m.name: m.title for m in build_methods().values()}  # the tables' and plots' names
DEFAULT_METHODS = ("finetune", "dss", "dss_mi_paper", "dss_mi_masked")
PAIRED_BASELINE = "dss"
