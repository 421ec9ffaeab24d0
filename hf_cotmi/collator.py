"""``DSSDataCollator``: one list of features -> ``{"pred": batch, "expl": batch}`` for the two DSS passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import DataCollatorForSeq2Seq

#: feature column -> (sub-batch, key inside it)
PRED_COLUMNS = {"input_ids": "input_ids", "attention_mask": "attention_mask", "labels": "labels"}
EXPL_COLUMNS = {
    "expl_input_ids": "input_ids",
    "expl_attention_mask": "attention_mask",
    "rationale_labels": "labels",
}


@dataclass
class DSSDataCollator:
    """Pad DSS features into a label-task batch and a rationale-task batch.

    Each feature is a mapping with these columns (what :func:`hf_cotmi.prepare_dss_features` produces):

    - label task: ``input_ids``, ``attention_mask`` (the tokenised ``predict: <input>``) and ``labels``
      (the tokenised label; optional at prediction time);
    - rationale task: ``expl_input_ids``, ``expl_attention_mask`` (the tokenised ``explain: <input>``) and
      ``rationale_labels`` (the tokenised rationale).

    Other columns (text, ids) are ignored. The result is ``{"pred": {...}, "expl": {...}}``, each sub-batch
    padded to its own longest sequence (or to a multiple of ``pad_to_multiple_of``), targets padded with
    ``label_pad_token_id``, and ``decoder_input_ids`` built by ``model.prepare_decoder_input_ids_from_labels``
    when a model is given. Features without the rationale columns (evaluation or prediction) give the
    ``pred`` part only; a batch that mixes both kinds is an error.

    Args:
        tokenizer: the student's tokenizer (its pad token pads the inputs).
        model: the student; when given, ``decoder_input_ids`` are prepared from the labels.
        pad_to_multiple_of: pad lengths up to a multiple of this (e.g. 8 for tensor cores).
        label_pad_token_id: value for padded target positions (ignored by the losses).
        return_tensors: ``"pt"``.

    Examples:
        >>> from hf_cotmi import build_word_tokenizer
        >>> tok = build_word_tokenizer(["a b c d"])
        >>> features = [
        ...     {"input_ids": [5, 1], "attention_mask": [1, 1], "labels": [6, 1],
        ...      "expl_input_ids": [7, 1], "expl_attention_mask": [1, 1], "rationale_labels": [5, 6, 7, 1]},
        ...     {"input_ids": [5, 6, 1], "attention_mask": [1, 1, 1], "labels": [1],
        ...      "expl_input_ids": [7, 1], "expl_attention_mask": [1, 1], "rationale_labels": [8, 1]},
        ... ]
        >>> batch = DSSDataCollator(tok)(features)
        >>> batch["pred"]["labels"].tolist(), batch["expl"]["labels"].shape
        ([[6, 1], [1, -100]], torch.Size([2, 4]))
    """

    tokenizer: Any
    model: Any = None
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100
    return_tensors: str = "pt"

    def __post_init__(self) -> None:
        self._pad = DataCollatorForSeq2Seq(
            self.tokenizer,
            model=self.model,
            padding=True,
            pad_to_multiple_of=self.pad_to_multiple_of,
            label_pad_token_id=self.label_pad_token_id,
            return_tensors=self.return_tensors,
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not features:
            raise ValueError("DSSDataCollator got an empty list of features")
        for index, feature in enumerate(features):
            if "input_ids" not in feature:
                raise ValueError(
                    f"feature {index} has no 'input_ids' (columns: {sorted(feature)}); expected the columns "
                    f"of hf_cotmi.prepare_dss_features: {sorted(PRED_COLUMNS)} and {sorted(EXPL_COLUMNS)}"
                )
        with_rationale = ["rationale_labels" in f and "expl_input_ids" in f for f in features]
        batch = {"pred": self._pad_part(features, PRED_COLUMNS)}
        if any(with_rationale):
            if not all(with_rationale):
                missing = [i for i, ok in enumerate(with_rationale) if not ok]
                raise ValueError(
                    f"features {missing} have no rationale columns (expl_input_ids, rationale_labels) while "
                    "others in the same batch do; give every training example a rationale or none"
                )
            batch["expl"] = self._pad_part(features, EXPL_COLUMNS)
        return batch

    def _pad_part(self, features: list[dict[str, Any]], columns: dict[str, str]) -> dict[str, Any]:
        padded = self._pad([_select(f, columns) for f in features])
        return {k: v for k, v in padded.items() if v is not None}


def _select(feature: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    return {target: feature[source] for source, target in columns.items() if source in feature}
