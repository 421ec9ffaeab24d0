"""``DSSMITrainingArguments``: every knob of DSS + MI training, on top of ``Seq2SeqTrainingArguments``."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import Seq2SeqTrainingArguments

from .losses import DIVERGENCES, REDUCTIONS, VARIANTS
from .prefixes import EXPLAIN_PREFIX, PREDICT_PREFIX


@dataclass
class DSSMITrainingArguments(Seq2SeqTrainingArguments):
    """Training arguments for :class:`~hf_cotmi.DSSMITrainer`.

    The loss is ``label_loss_weight * label_loss + rationale_loss_weight * rationale_loss +
    mi_loss_weight * mi_loss`` (Chen et al. 2024 use 0.5, 0.5, 0.1). Special cases:

    - ``mi_loss_weight=0``: plain Distilling Step-by-Step (Hsieh et al. 2023).
    - ``rationale_loss_weight=0`` and ``mi_loss_weight=0``: standard fine-tuning on labels; the rationale
      pass is skipped.

    Everything else is ``Seq2SeqTrainingArguments``. Two defaults differ: ``remove_unused_columns=False``
    (the rationale columns must reach the collator) and ``predict_with_generate=True``.

    Args:
        label_loss_weight: weight of the label task (``predict:`` -> label) cross-entropy.
        rationale_loss_weight: weight of the rationale task (``explain:`` -> rationale) cross-entropy.
        mi_loss_weight: weight of the mutual-information term; 0 turns it off.
        mi_reduction: ``"max"`` (paper) or ``"mean"`` over decoder positions.
        mi_divergence: ``"ce"`` (paper) or ``"kl"``.
        mi_variant: ``"paper"`` (released behaviour) or ``"masked"`` (padding excluded, one softmax).
        predict_prefix: prefix of the label-task input.
        explain_prefix: prefix of the rationale-task input.
        output_rationale: also generate rationales in ``predict()``/``evaluate()`` and hand them back.
        rationale_max_new_tokens: longest generated rationale, in new tokens.

    Examples:
        >>> args = DSSMITrainingArguments("out", mi_loss_weight=0.1, report_to="none")
        >>> args.remove_unused_columns, args.predict_with_generate
        (False, True)
    """

    label_loss_weight: float = field(
        default=0.5, metadata={"help": "Weight of the label-task cross-entropy (predict: input -> label)."}
    )
    rationale_loss_weight: float = field(
        default=0.5,
        metadata={
            "help": "Weight of the rationale-task cross-entropy (explain: input -> rationale). "
            "0 together with mi_loss_weight=0 is standard fine-tuning (the rationale pass is skipped)."
        },
    )
    mi_loss_weight: float = field(
        default=0.1,
        metadata={"help": "Weight of the mutual-information loss (Chen et al. 2024). 0 is plain DSS."},
    )
    mi_reduction: str = field(
        default="max",
        metadata={"help": "How the MI loss reduces over decoder positions.", "choices": list(REDUCTIONS)},
    )
    mi_divergence: str = field(
        default="ce",
        metadata={
            "help": "ce: cross-entropy as in the paper; kl: KL divergence of the normalised distributions.",
            "choices": list(DIVERGENCES),
        },
    )
    mi_variant: str = field(
        default="paper",
        metadata={
            "help": "paper: the released behaviour (no masking, double softmax); "
            "masked: padding positions excluded and a single softmax.",
            "choices": list(VARIANTS),
        },
    )
    predict_prefix: str = field(default=PREDICT_PREFIX, metadata={"help": "Prefix of the label-task input."})
    explain_prefix: str = field(
        default=EXPLAIN_PREFIX, metadata={"help": "Prefix of the rationale-task input."}
    )
    output_rationale: bool = field(
        default=False,
        metadata={
            "help": "Also generate rationales from the explain: input in evaluate()/predict(); predict() "
            "returns them and writes predictions.jsonl to the output directory."
        },
    )
    rationale_max_new_tokens: int = field(
        default=256,
        metadata={"help": "Longest generated rationale (new tokens) when output_rationale is set."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={
            "help": "Keep dataset columns the model's forward does not take (the rationale columns must "
            "reach the collator). Default False for DSS."
        },
    )
    predict_with_generate: bool = field(
        default=True, metadata={"help": "Generate labels in evaluate()/predict() to compute metrics."}
    )

    def __post_init__(self) -> None:
        weights = {
            "label_loss_weight": self.label_loss_weight,
            "rationale_loss_weight": self.rationale_loss_weight,
            "mi_loss_weight": self.mi_loss_weight,
        }
        for name, value in weights.items():
            if not isinstance(value, (int, float)) or value != value or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if all(value == 0 for value in weights.values()):
            raise ValueError(
                "label_loss_weight, rationale_loss_weight and mi_loss_weight are all 0: nothing would be "
                "trained; give at least one a positive weight"
            )
        for name, value, choices in (
            ("mi_reduction", self.mi_reduction, REDUCTIONS),
            ("mi_divergence", self.mi_divergence, DIVERGENCES),
            ("mi_variant", self.mi_variant, VARIANTS),
        ):
            if value not in choices:
                raise ValueError(f"{name}={value!r} is not supported; expected one of {', '.join(choices)}")
        if self.rationale_max_new_tokens < 1:
            raise ValueError(f"rationale_max_new_tokens must be >= 1, got {self.rationale_max_new_tokens}")
        super().__post_init__()

    @property
    def needs_rationale_pass(self) -> bool:
        """Whether training runs the ``explain:`` pass (False for standard fine-tuning).

        Examples:
            >>> DSSMITrainingArguments("out", rationale_loss_weight=0, mi_loss_weight=0).needs_rationale_pass
            False
        """
        return self.rationale_loss_weight > 0 or self.mi_loss_weight > 0

    def loss_settings(self) -> dict[str, float | str]:
        """The loss weights and MI settings, e.g. for the model card.

        Examples:
            >>> DSSMITrainingArguments("out").loss_settings()["mi_loss_weight"]
            0.1
        """
        return {
            "label_loss_weight": self.label_loss_weight,
            "rationale_loss_weight": self.rationale_loss_weight,
            "mi_loss_weight": self.mi_loss_weight,
            "mi_reduction": self.mi_reduction,
            "mi_divergence": self.mi_divergence,
            "mi_variant": self.mi_variant,
        }
