"""``DSSDataCollator``: one list of features -> ``{"pred": batch, "expl": batch}`` for the two DSS passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import DataCollatorForSeq2Seq

from .data.causal import check_prompt_rows
from .student_types import ensure_pad_token, resolve_student_type
from .students import context_length

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
      (the tokenised label; optional at prediction time, but then missing from every feature of the batch);
    - rationale task: ``expl_input_ids``, ``expl_attention_mask`` (the tokenised ``explain: <input>``) and
      ``rationale_labels`` (the tokenised rationale).

    Other columns (text, ids) are ignored. The result is ``{"pred": {...}, "expl": {...}}``, each sub-batch
    padded to its own longest sequence (or to a multiple of ``pad_to_multiple_of``), targets padded on the
    right with ``label_pad_token_id`` (whatever the tokenizer's ``padding_side``), and ``decoder_input_ids``
    built by ``model.prepare_decoder_input_ids_from_labels`` when a model is given. Features without the
    rationale columns (evaluation or prediction) give the ``pred`` part only; a batch that mixes both kinds is an error.

    Decoder-only students (``model.config.is_encoder_decoder`` False, or ``student_type="causal"``) get
    the *target-aligned* layout: each feature holds one sequence, prompt and target, with ``labels`` -100
    on the prompt (what ``prepare_dss_features(..., model=model)`` produces). The prompt is the leading run
    of -100 labels. Prompts are padded on the left and targets on the right, so every row's target starts
    at the same column ``P`` (the longest prompt): ``input_ids[:, :P]`` is the left-padded prompt batch that
    generation wants, and the logits that predict targets are the contiguous positions ``P - 1`` onwards
    (the trainer computes only those). ``position_ids`` count real tokens only (left padding does not shift
    positions), padded positions have attention 0 and label -100. A tokenizer without a pad token gets its
    EOS token as pad, with a warning. Given the model, a row with labels longer than the student's context
    (:func:`hf_cotmi.students.context_length`) is refused: its features were built without the model.

    Args:
        tokenizer: the student's tokenizer (its pad token pads the inputs).
        model: the student; picks the layout (``config.is_encoder_decoder``) and, for seq2seq students,
            prepares ``decoder_input_ids`` from the labels.
        pad_to_multiple_of: pad lengths up to a multiple of this (e.g. 8 for tensor cores).
        label_pad_token_id: value for padded target positions (ignored by the losses).
        return_tensors: ``"pt"``.
        student_type: ``"seq2seq"`` or ``"causal"`` where no model is given (must agree with ``model``).

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
    student_type: str | None = None

    def __post_init__(self) -> None:
        self.student_type = resolve_student_type(self.model, self.student_type)
        ensure_pad_token(self.tokenizer)
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
        rows = [_select(f, columns) for f in features]
        with_labels = ["labels" in row for row in rows]
        if any(with_labels) and not all(with_labels):
            source = next(source for source, target in columns.items() if target == "labels")
            missing = [i for i, ok in enumerate(with_labels) if not ok]
            raise ValueError(
                f"features {missing} have no {source!r} while others in the same batch do; give every "
                f"feature {source!r} or none"
            )
        if self.student_type == "causal":
            if not any(with_labels):
                check_prompt_rows([row["input_ids"] for row in rows], self.tokenizer.eos_token_id)
            elif self.model is not None:
                _check_rows_fit_context(rows, columns, context_length(self.model, self.tokenizer))
            return pad_target_aligned(
                rows, self.tokenizer.pad_token_id, self.label_pad_token_id, self.pad_to_multiple_of
            )
        if all(with_labels):
            # decoder targets start at the first position: pad them on the right whatever the tokenizer's
            # padding_side (DataCollatorForSeq2Seq follows it, and pads no further once they are equal)
            width = _round_up(max(len(row["labels"]) for row in rows), self.pad_to_multiple_of)
            for row in rows:
                labels = _as_list(row["labels"])
                row["labels"] = labels + [self.label_pad_token_id] * (width - len(labels))
        padded = self._pad(rows)
        return {k: v for k, v in padded.items() if v is not None}


def _check_rows_fit_context(rows: list[dict[str, Any]], columns: dict[str, str], context: int | None) -> None:
    """Refuse a decoder-only training row (prompt + target) longer than the student's context.

    :func:`hf_cotmi.prepare_dss_features` cuts prompts to the context only when it is given the model; rows
    built without it can be longer, and a model with position embeddings (GPT-2) then indexes past them.
    """
    if context is None:
        return
    source = next(source for source, target in columns.items() if target == "input_ids")
    for index, row in enumerate(rows):
        if len(row["input_ids"]) > context:
            raise ValueError(
                f"feature {index}: {source!r} has {len(row['input_ids'])} tokens but the student's context of "
                f"{context} tokens holds prompt and target together; build the features with "
                "prepare_dss_features(..., model=model), which cuts each prompt to fit"
            )


def _as_list(values: Any) -> list:
    """A row's ids as a list of Python ints: rows of a dataset in torch or numpy format hold arrays."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _round_up(value: int, multiple: int | None) -> int:
    return value if not multiple else -(-value // multiple) * multiple


def pad_target_aligned(
    rows: list[dict[str, Any]],
    pad_token_id: int,
    label_pad_token_id: int = -100,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad decoder-only sequences so that every row's target starts at the same column.

    Each row has ``input_ids``, optionally ``attention_mask`` and ``labels`` (-100 on the prompt). The
    prompt (the leading -100 labels; the whole row without labels) is left-padded to the longest prompt,
    the rest right-padded to the longest target. Returns ``input_ids``, ``attention_mask``,
    ``position_ids`` (0, 1, ... over real tokens) and, when the rows have labels, ``labels``.

    Examples:
        >>> batch = pad_target_aligned(
        ...     [{"input_ids": [1, 5, 6, 2], "labels": [-100, -100, 6, 2]},
        ...      {"input_ids": [1, 5, 5, 5, 7, 8, 2], "labels": [-100, -100, -100, -100, 7, 8, 2]}], 0)
        >>> batch["input_ids"].tolist()
        [[0, 0, 1, 5, 6, 2, 0], [1, 5, 5, 5, 7, 8, 2]]
        >>> batch["labels"].tolist()[0], batch["position_ids"].tolist()[0]
        ([-100, -100, -100, -100, 6, 2, -100], [0, 0, 0, 1, 2, 3, 3])
    """
    has_labels = all("labels" in row for row in rows)
    if any("labels" in row for row in rows) and not has_labels:
        raise ValueError("some features have 'labels' and others do not; give every feature labels or none")
    prompts, splits = [], []
    for index, row in enumerate(rows):
        ids = _as_list(row["input_ids"])
        labels = _as_list(row["labels"]) if has_labels else [label_pad_token_id] * len(ids)
        if len(labels) != len(ids):
            raise ValueError(
                f"feature {index}: 'labels' has {len(labels)} positions but 'input_ids' has {len(ids)}; a "
                "decoder-only student needs labels aligned with the sequence (-100 on the prompt), as "
                "prepare_dss_features(..., model=model) makes them"
            )
        start = next((i for i, label in enumerate(labels) if label != label_pad_token_id), len(ids))
        prompts.append(start)
        mask = row.get("attention_mask")
        splits.append((ids, [1] * len(ids) if mask is None or len(mask) == 0 else _as_list(mask), labels))
    width_prompt = _round_up(max(prompts), pad_to_multiple_of)
    width_target = max(len(ids) - start for (ids, _, _), start in zip(splits, prompts))
    total = _round_up(width_prompt + width_target, pad_to_multiple_of)
    input_ids = torch.full((len(rows), total), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), total), dtype=torch.long)
    labels_out = torch.full((len(rows), total), label_pad_token_id, dtype=torch.long)
    for row, ((ids, mask, labels), start) in enumerate(zip(splits, prompts)):
        left = width_prompt - start
        input_ids[row, left : left + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, left : left + len(ids)] = torch.tensor(mask, dtype=torch.long)
        labels_out[row, left : left + len(ids)] = torch.tensor(labels, dtype=torch.long)
    position_ids = (attention.cumsum(-1) - 1).clamp_min(0)
    batch = {"input_ids": input_ids, "attention_mask": attention, "position_ids": position_ids}
    if has_labels:
        batch["labels"] = labels_out
    return batch


def _select(feature: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    return {target: feature[source] for source, target in columns.items() if source in feature}
