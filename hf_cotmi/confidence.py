"""Confidence of a student in its label, in three modes, plus whether the label is correct.

- ``"candidates"``: score every candidate label string by its teacher-forced log-likelihood
  ``log p(y | x) = sum_t log p(y_t | y_<t, x)`` and take a softmax over the candidates; the prediction is
  the arg-max candidate and the confidence its softmax probability. Candidates are a fixed label set
  (``["entailment", "neutral", "contradiction"]``) or a column holding a list per example (CQA's choices).
- ``"sequence"``: generate the label and take the model's own probability of the generated sequence,
  ``exp(sum_t log p(y_t | y_<t, x))`` over the generated tokens up to and including end-of-sequence, from
  the raw logits of generation (``output_logits=True``, log-softmax in float32): what a teacher-forced pass
  over the generated tokens gives. Generation's logits processors (a repetition penalty,
  ``no_repeat_ngram_size``, ``bad_words_ids``, ``suppress_tokens``, ``min_new_tokens``, ...) only choose
  the tokens; they do not change the probability counted. A token that a processor forces
  (``forced_bos_token_id``, ``forced_eos_token_id`` at the length limit: every processed score but one -inf)
  is not the model's choice and counts as given, with probability 1. With beams, each token's probability
  comes from the beam that produced it (``beam_indices``). Generation stops at the EOS the confidence ends
  at (the generation config's, else the model config's, else the tokenizer's), even where the generation
  config names none.
- ``"first_token"``: generate the label and take the model's top softmax probability (raw logits) at the
  first decoding step the model chooses. A step forced by a logits processor (an mBART/NLLB-style
  ``forced_bos_token_id`` fixes the first generated token) is skipped: the confidence is read at the first
  step whose processed scores are not all -inf but one. So are leading tokens that say nothing about the
  label: those every training target starts with (BERT's ``[CLS]``) and whitespace-only ones (the lone
  space a Qwen2 or Llama-3 student writes before a number).

The encoder runs once per batch of examples; its hidden states are reused for generation and for scoring
all candidates of those examples (expanded to one row per candidate, scored ``batch_size`` rows at a
time). Works for T5, BART and ``EncoderDecoderModel`` students, and for decoder-only students (Llama,
Qwen2, GPT-2, ...: :mod:`hf_cotmi.causal_confidence`, where the prompt's key-value cache plays the
encoder's part).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .calibration import average_confidence, expected_calibration_error
from .dataset_rows import num_rows
from .metrics import decode_token_ids, text_accuracy
from .prefixes import PREDICT_PREFIX
from .student_types import check_chat_template_student, resolve_student_type

ConfidenceMode = Literal["candidates", "sequence", "first_token"]
CONFIDENCE_MODES: tuple[str, ...] = ("candidates", "sequence", "first_token")
"""The values of the ``mode`` of ``label_confidences``: how the confidence in a label is measured."""

__all__ = ["CONFIDENCE_MODES", "LabelConfidences", "label_confidences", "check_candidates_mode"]


def _default_is_correct(prediction: str, reference: str) -> bool:
    # the library's text accuracy itself, so that ECE and accuracy agree on "correct" (an empty reference too)
    return text_accuracy([prediction], [reference]) == 1.0


@dataclass
class LabelConfidences:
    """Per-example predictions, gold labels, confidences and correctness from :func:`label_confidences`.

    Attributes:
        mode: the confidence mode used (``"candidates"``, ``"sequence"`` or ``"first_token"``).
        predictions: predicted label text per example (arg-max candidate, or generated text).
        references: gold label text per example.
        confidences: confidence per example, in [0, 1].
        correct: whether each prediction is correct.
        candidate_probabilities: in candidates mode, the softmax over each example's candidates (in the
            order given, duplicates dropped); otherwise ``None``.

    Examples:
        >>> import numpy as np
        >>> r = LabelConfidences("sequence", ["a", "b"], ["a", "c"], np.array([0.9, 0.6]), np.array([1, 0]))
        >>> r.accuracy, round(r.average_confidence, 2)
        (0.5, 0.75)
    """

    mode: str
    predictions: list[str]
    references: list[str]
    confidences: np.ndarray
    correct: np.ndarray
    candidate_probabilities: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.predictions)

    @property
    def accuracy(self) -> float:
        """Fraction of correct predictions."""
        return float(np.mean(self.correct)) if len(self.correct) else float("nan")

    @property
    def average_confidence(self) -> float:
        """Mean confidence (see :func:`hf_cotmi.average_confidence`)."""
        return average_confidence(self.confidences)

    def ece(self, n_bins: int = 10, binning: str = "uniform") -> float:
        """Expected calibration error of these predictions (:func:`hf_cotmi.expected_calibration_error`)."""
        return expected_calibration_error(self.confidences, self.correct, n_bins=n_bins, binning=binning)

    @classmethod
    def concatenate(cls, parts: Sequence[LabelConfidences]) -> LabelConfidences:
        """Join results computed on consecutive parts of a dataset, in the order given.

        Args:
            parts: one or more results of the same mode (e.g. one per process, in rank order).

        Examples:
            >>> import numpy as np
            >>> a = LabelConfidences("sequence", ["x"], ["x"], np.array([0.9]), np.array([True]))
            >>> b = LabelConfidences("sequence", ["y"], ["z"], np.array([0.4]), np.array([False]))
            >>> joined = LabelConfidences.concatenate([a, b])
            >>> joined.predictions, joined.correct.tolist()
            (['x', 'y'], [True, False])
        """
        if not parts:
            raise ValueError("LabelConfidences.concatenate needs at least one part")
        modes = {part.mode for part in parts}
        if len(modes) > 1:
            raise ValueError(f"cannot join results of different confidence modes: {sorted(modes)}")
        probabilities = [part.candidate_probabilities for part in parts]
        return cls(
            mode=parts[0].mode,
            predictions=[p for part in parts for p in part.predictions],
            references=[r for part in parts for r in part.references],
            confidences=np.concatenate([np.asarray(part.confidences, dtype=float) for part in parts]),
            correct=np.concatenate([np.asarray(part.correct, dtype=bool) for part in parts]),
            candidate_probabilities=None
            if all(p is None for p in probabilities)
            else [row for rows in probabilities for row in (rows or [])],
        )


# ---------------------------------------------------------------------------------------------------------
# dataset access: datasets.Dataset, a dict of columns, or a list of row dicts


def _nli_inputs_as_trained(dataset: Any, tokenizer: Any, input_column: str) -> Any:
    """Raw NLI rows with their ``input`` rebuilt as the features build it (premise, EOS, hypothesis)."""
    from .data.features import is_nli_layout, student_input_texts

    columns = _column_names(dataset)
    if input_column != "input" or "input_ids" in columns or not is_nli_layout(columns):
        return dataset
    if isinstance(dataset, Mapping):
        return {**dataset, "input": student_input_texts(dataset, tokenizer)}
    if hasattr(dataset, "column_names"):
        texts = student_input_texts(dataset, tokenizer)
        return (dataset.remove_columns("input") if "input" in columns else dataset).add_column("input", texts)
    pairs = {name: [row[name] for row in dataset] for name in ("premise", "hypothesis")}
    return [{**row, "input": text} for row, text in zip(dataset, student_input_texts(pairs, tokenizer))]


def _column_names(dataset: Any) -> list[str]:
    if hasattr(dataset, "column_names") and not isinstance(dataset, Mapping):
        names = dataset.column_names
        if isinstance(names, Mapping):  # a DatasetDict
            raise ValueError(
                "`dataset` is a DatasetDict; pass one split (e.g. dataset['test']), or a dict of datasets "
                "to ECECallback via eval_dataset"
            )
        return list(names)
    if isinstance(dataset, Mapping):
        return list(dataset.keys())
    if isinstance(dataset, Sequence) and not isinstance(dataset, str):
        return list(dataset[0].keys()) if len(dataset) else []
    raise ValueError(
        f"`dataset` must be a datasets.Dataset, a dict of columns or a list of row dicts; got {type(dataset)}"
    )


def _as_list(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_as_list(v) for v in value]
    return value


def _iter_batches(dataset: Any, columns: Sequence[str], batch_size: int) -> Iterator[dict[str, list[Any]]]:
    n = num_rows(dataset)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if isinstance(dataset, Mapping):
            yield {c: _as_list(list(dataset[c][start:stop])) for c in columns}
        elif hasattr(dataset, "column_names"):
            sliced = dataset[start:stop]
            yield {c: _as_list(list(sliced[c])) for c in columns}
        else:
            rows = dataset[start:stop]
            yield {c: [_as_list(row[c]) for row in rows] for c in columns}


def _examples_progress(description: str | None, total: int) -> Any:
    """A ``tqdm`` bar over ``total`` examples (on standard error, cleared when done); off without a
    description."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=description,
        unit="example",
        leave=False,
        dynamic_ncols=True,
        disable=description is None,
    )


def _counted(
    batches: Iterator[dict[str, list[Any]]], advance: Callable[[int], Any]
) -> Iterator[dict[str, list[Any]]]:
    """The batches, each counted by ``advance`` once the loop asks for the next one (its work is done)."""
    for batch in batches:
        yield batch
        advance(len(next(iter(batch.values()))))


# ---------------------------------------------------------------------------------------------------------
# model helpers


def _pad(sequences: Sequence[Sequence[int]], value: int, torch: Any, device: Any) -> Any:
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), value, dtype=torch.long, device=device)
    for i, s in enumerate(sequences):
        if len(s):
            out[i, : len(s)] = torch.tensor(list(s), dtype=torch.long, device=device)
    return out


def _encoder_output(hidden: Any) -> Any:
    # a fresh object each time: generate() expands encoder outputs for beam search in place
    from transformers.modeling_outputs import BaseModelOutput

    return BaseModelOutput(last_hidden_state=hidden)


def _score_candidates(
    model: Any,
    hidden: Any,
    mask: Any,
    candidate_ids: list[list[list[int]]],
    batch_size: int,
    torch: Any,
) -> list[np.ndarray]:
    """Sum of teacher-forced token log-probabilities of every candidate of every example."""
    rows = [(i, ids) for i, cands in enumerate(candidate_ids) for ids in cands]
    totals: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        index = torch.tensor([i for i, _ in chunk], dtype=torch.long, device=hidden.device)
        labels = _pad([ids for _, ids in chunk], -100, torch, hidden.device)
        # decoder input = labels shifted right behind the start token (-100 -> pad), as in training; no loss
        if hasattr(model, "prepare_decoder_input_ids_from_labels"):
            targets = {"decoder_input_ids": model.prepare_decoder_input_ids_from_labels(labels=labels)}
        else:
            targets = {"labels": labels}
        outputs = model(
            encoder_outputs=_encoder_output(hidden.index_select(0, index)),
            attention_mask=mask.index_select(0, index),
            use_cache=False,
            return_dict=True,
            **targets,
        )
        log_probs = torch.log_softmax(outputs.logits.float(), dim=-1)
        keep = labels != -100
        token_lp = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        totals.extend(torch.where(keep, token_lp, torch.zeros_like(token_lp)).sum(-1).tolist())
    scores, k = [], 0
    for cands in candidate_ids:
        scores.append(np.asarray(totals[k : k + len(cands)], dtype=np.float64))
        k += len(cands)
    return scores


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - np.max(x))
    return z / z.sum()


def _generation_confidences(
    model: Any,
    out: Any,
    mode: str,
    num_beams: int,
    eos_ids: set[int],
    torch: Any,
    first_example: int | Sequence[int] = 0,
    target_prefix: Sequence[int] = (),
    tokenizer: Any = None,
) -> list[float]:
    """Confidence of each returned sequence of ``generate(..., output_scores=True, output_logits=True)``.

    The confidence is the model's own probability, from the raw logits (``out.logits``); the processed
    scores (``out.scores``) only tell which steps a logits processor forced. ``first_example`` is the dataset
    index of the first sequence (the others follow it), or of each sequence, for error messages.
    ``target_prefix``: the ids every training target starts with (:func:`target_prefix_ids`), which the
    first-token confidence reads past, as it reads past leading tokens that ``tokenizer`` decodes to
    whitespace only (:func:`_whitespace_ids`; none are skipped without a tokenizer).
    """
    if getattr(out, "logits", None) is None or getattr(out, "scores", None) is None:
        raise ValueError(
            "generation confidences need `generate(..., output_scores=True, output_logits=True, "
            "return_dict_in_generate=True)`: the raw logits give the model's probabilities, the processed "
            "scores the steps a logits processor forced"
        )
    steps = _GeneratedSteps.of(out, num_beams, eos_ids, torch)
    if mode == "first_token":
        blank = _whitespace_ids(tokenizer, steps.tokens) if tokenizer is not None else set()
        return _first_token_confidences(model, out, steps, torch, first_example, target_prefix, blank)
    return _sequence_confidences(out, steps, torch)


@dataclass
class _GeneratedSteps:
    """Where each returned sequence's generated tokens come from, step by step.

    Attributes:
        tokens: ``(sequences, steps)`` generated token ids (padding after a row's end).
        source: ``(sequences, steps)`` the row of ``out.logits[step]`` / ``out.scores[step]`` that produced
            each token: the sequence's own row without beams, its beam's (``beam_indices``) with them.
        live: ``(sequences, steps)`` True at the steps of the returned sequence up to and including its
            first EOS (False on a finished row's padding and after a beam's end).
    """

    tokens: Any
    source: Any
    live: Any

    @classmethod
    def of(cls, out: Any, num_beams: int, eos_ids: set[int], torch: Any) -> _GeneratedSteps:
        beam_indices = getattr(out, "beam_indices", None) if num_beams > 1 else None
        rows, steps = out.sequences.shape[0], len(out.logits)
        device = out.sequences.device
        if beam_indices is None and out.logits[0].shape[0] != rows:
            raise ValueError(
                f"generate returned {rows} sequences but {out.logits[0].shape[0]} logits rows per step and no "
                f"`beam_indices` (num_beams={num_beams}): cannot tell which row scored each sequence"
            )
        if beam_indices is None:  # one row of the step's logits per returned sequence
            source = torch.arange(rows, device=device).unsqueeze(1).expand(-1, steps)
        else:  # beam_indices: the flat (example * num_beams + beam) row at each step, -1 after a beam's end
            source = beam_indices[:, :steps].long().to(device)
            steps = int((source >= 0).sum(dim=1).max())
            source = source[:, :steps]
        tokens = out.sequences[:, out.sequences.shape[1] - steps :]
        live = (source >= 0) & ~_after_first_eos(tokens, eos_ids, torch)
        return cls(tokens=tokens, source=source.clamp(min=0), live=live)

    def rows(self, step: int, per_step: Sequence[Any]) -> Any:
        """Each sequence's row of ``per_step[step]`` (logits or scores), as float32."""
        table = per_step[step]
        return table.index_select(0, self.source[:, step].to(table.device)).float()

    def forced(self, scores: Sequence[Any], torch: Any) -> Any:
        """``(sequences, steps)``: True where a logits processor forced the step (every processed score but
        one is -inf: the model chose nothing there). A row of NaN (a broken model) is not forced: its NaN
        confidence must reach the finiteness check, not count as a given token."""
        width = scores[0].shape[-1]
        masked = [torch.isneginf(self.rows(t, scores)).sum(dim=-1) for t in range(self.tokens.shape[1])]
        return torch.stack(masked, dim=1).to(self.live.device) >= width - 1


def _sequence_confidences(out: Any, steps: _GeneratedSteps, torch: Any) -> list[float]:
    """``exp(sum log p(token))`` over each sequence's live steps, from the raw logits (log-softmax, float32).

    A step forced by a logits processor (``forced_bos_token_id``, ``forced_eos_token_id`` at the length
    limit) is not the model's choice: it counts as given (probability 1). Other processors (a repetition
    penalty, banned n-grams, suppressed tokens) only choose the tokens: each counts at the model's own
    probability.
    """
    tokens = steps.tokens.clamp(min=0)  # beam search may fill after the end with -1
    log_probs = torch.stack(
        [
            torch.log_softmax(steps.rows(t, out.logits), dim=-1)
            .gather(-1, tokens[:, t : t + 1].to(out.logits[t].device))
            .squeeze(-1)
            .to(steps.live.device)
            for t in range(tokens.shape[1])
        ],
        dim=1,
    )
    counted = steps.live & ~steps.forced(out.scores, torch)
    total = torch.where(counted, log_probs, torch.zeros_like(log_probs)).sum(dim=1)
    return torch.exp(total).clamp(0.0, 1.0).tolist()


def _after_first_eos(generated: Any, eos_ids: set[int], torch: Any) -> Any:
    """True at the generated positions after each row's first EOS (a finished row's padding).

    Examples:
        >>> import torch
        >>> _after_first_eos(torch.tensor([[5, 1, 0], [5, 6, 7]]), {1}, torch).tolist()
        [[False, False, True], [False, False, False]]
    """
    is_eos = torch.zeros_like(generated, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= generated == e
    return (torch.cumsum(is_eos.long(), dim=1) - is_eos.long()) > 0


def target_prefix_ids(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before every target text (``tokenizer(text_target=...)``): ``[CLS]`` for
    BERT, ``<s>`` for BART, none for T5.

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> target_prefix_ids(build_word_tokenizer(["a b"]))  # writes "a b </s>": nothing in front
        []
    """
    from .data.causal import ids_in_front

    probe = tokenizer(text_target="a", verbose=False)["input_ids"]
    bare = tokenizer("a", add_special_tokens=False, verbose=False)["input_ids"]
    return ids_in_front(probe, bare) or []


def _target_prefix_steps(tokens: Any, prefix: Sequence[int], torch: Any) -> Any:
    """``(sequences, steps)``: True at the leading steps of each sequence that generated ``prefix`` (a
    prefix of it: the steps up to the first that differs).

    Examples:
        >>> import torch
        >>> _target_prefix_steps(torch.tensor([[7, 5, 7], [5, 7, 7]]), [7], torch).tolist()
        [[True, False, False], [False, False, False]]
    """
    marked = torch.zeros_like(tokens, dtype=torch.bool)
    agree = torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    for step, token in enumerate(list(prefix)[: tokens.shape[1]]):
        agree &= tokens[:, step] == int(token)
        marked[:, step] = agree
    return marked


def _whitespace_ids(tokenizer: Any, tokens: Any) -> set[int]:
    """The ids among ``tokens`` that ``tokenizer`` decodes to whitespace only (special tokens excluded).

    A byte-level tokenizer that splits digits (Qwen2, Llama 3) writes the answer ``" 12"`` after a prompt as
    ``" "``, ``"1"``, ``"2"``; a SentencePiece one can write a lone ``"▁"``. Such a token says nothing about
    the label, which is compared stripped.

    Examples:
        >>> import torch
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> tok = build_word_tokenizer(["yes no"])
        >>> _whitespace_ids(tok, torch.tensor([[tok.convert_tokens_to_ids("yes"), tok.eos_token_id]]))
        set()
    """
    special = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or [])}
    ids = {int(t) for t in tokens.flatten().tolist() if int(t) >= 0} - special
    return {i for i in ids if not tokenizer.decode([i], skip_special_tokens=False).strip()}


def _first_token_confidences(
    model: Any,
    out: Any,
    steps: _GeneratedSteps,
    torch: Any,
    first_example: int | Sequence[int],
    target_prefix: Sequence[int] = (),
    whitespace_ids: set[int] | frozenset[int] = frozenset(),
) -> list[float]:
    """The model's top softmax probability (raw logits) at each sequence's first step the model chose.

    A step that a logits processor forces (the generation config's ``forced_bos_token_id`` fixes an
    encoder-decoder's first token, ``forced_eos_token_id`` the token at the length limit) leaves every
    processed score of its row but one at -inf: the token is not the model's choice. Such steps are skipped
    (:meth:`_GeneratedSteps.forced`), so the confidence is read at the first step the model chose, among the
    steps up to the sequence's end (its first EOS). With beams, a step's row is the chosen beam's there.

    The leading steps that generated ``target_prefix`` (the special tokens every training target starts
    with: BERT's ``[CLS]``, BART's ``<s>``) are skipped too: the student learnt to emit them whatever the
    answer, so their probability says nothing about the label. So are the leading steps that generated a
    token of ``whitespace_ids`` (a lone space, as a Qwen2 or Llama-3 student writes before a number: the
    label is compared stripped, so the space says nothing about it either). A sequence that is nothing but
    such tokens (and forced steps) is read at its first chosen step, as without them.

    Raises:
        ValueError: a sequence with no such step (every step up to its end was forced).
    """
    chosen = steps.live & ~steps.forced(out.scores, torch)
    # the leading run of steps that say nothing about the label: target prefix, whitespace, forced tokens
    uninformative = _target_prefix_steps(steps.tokens, target_prefix, torch) | (steps.live & ~chosen)
    for token in whitespace_ids:
        uninformative |= steps.tokens == int(token)
    leading = uninformative.long().cumprod(dim=1).bool()
    about_label = chosen & ~leading
    candidate = torch.where(about_label.any(dim=1, keepdim=True), about_label, chosen)
    missing = (~candidate.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        config = getattr(model, "generation_config", None)
        forcing = ", ".join(
            f"{name}={getattr(config, name, None)}" for name in ("forced_bos_token_id", "forced_eos_token_id")
        )
        example = first_example + missing[0] if isinstance(first_example, int) else first_example[missing[0]]
        raise ValueError(
            f"`mode='first_token'`: example {example} has no generated token that the "
            f"model chose: each of its steps was forced by a logits processor (generation config: {forcing}), "
            "so its top probability is 1 whatever the model predicts; allow more new tokens "
            "(`max_new_tokens` or `max_length`)"
        )
    first = candidate.long().argmax(dim=1).tolist()  # the first True of each row
    return [
        torch.softmax(out.logits[step][int(steps.source[row, step])].float(), dim=-1).max().item()
        for row, step in enumerate(first)
    ]


# ---------------------------------------------------------------------------------------------------------


def label_confidences(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    *,
    mode: ConfidenceMode | None = None,
    label_candidates: Sequence[str] | str | None = None,
    label_column: str = "label",
    input_column: str = "input",
    prefix: str = PREDICT_PREFIX,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    max_length: int | None = None,
    num_beams: int = 1,
    max_source_length: int | None = None,
    is_correct: Callable[[str, str], bool] | None = None,
    chat_template: bool = False,
    progress_bar: str | None = None,
) -> LabelConfidences:
    """Predict the label of every example with a student and measure its confidence.

    Args:
        model: a seq2seq ``PreTrainedModel`` (T5, BART, ``EncoderDecoderModel``, ...) or a decoder-only one
            (``config.is_encoder_decoder`` false: Llama, Qwen2, GPT-2, ...). A decoder-only student's prompt
            is the features' prompt (the leading ``input_ids`` whose ``labels`` are -100) or the raw text
            tokenised as :func:`~hf_cotmi.data.causal.encode_causal_task` does; candidates are split off the
            prompt as training splits a target, and every length limit counts generated tokens.
        tokenizer: its tokenizer (decodes generations, tokenises candidates with ``text_target=``).
        dataset: a ``datasets.Dataset``, a dict of columns or a list of row dicts. Encoder input comes from
            ``input_ids`` (+ ``attention_mask``) when present (as ``prepare_dss_features`` writes them),
            otherwise from ``prefix + example[input_column]``. The gold label comes from ``label_column``
            (text), otherwise from decoding ``labels``.
        mode: ``"candidates"``, ``"sequence"`` or ``"first_token"`` (module docstring). Default:
            ``"candidates"`` when ``label_candidates`` is given, otherwise ``"sequence"``.
        label_candidates: a fixed list of candidate label strings shared by all examples, or the *name of a
            column* holding each example's own list of candidates (e.g. ``"choices"``). Duplicates are
            dropped (first kept), and so are candidates whose target ids repeat an earlier candidate's
            (``"yes"`` and ``" yes"``): the model cannot tell them apart.
        label_column: column with the gold label text.
        input_column: column with the raw input text (used only without ``input_ids``). Raw NLI rows (with
            ``premise`` and ``hypothesis`` columns) read with the default ``"input"`` are joined as
            :func:`~hf_cotmi.prepare_dss_features` joins them (:func:`~hf_cotmi.data.features.student_input_texts`:
            the tokenizer's EOS token), not as the ``input`` column of :func:`~hf_cotmi.load_dss_dataset`
            (``</s>``, which only T5-style tokenizers read as EOS).
        prefix: prepended to ``input_column`` text (the DSS ``predict:`` task prefix).
        batch_size: examples per encoder pass; also candidate rows per decoder pass.
        max_new_tokens: generation length limit (generation modes).
        max_length: alternative total length limit passed to ``generate`` when ``max_new_tokens`` is unset
            (for a decoder-only student: the number of new tokens, as in the trainer).
        num_beams: beams for generation (1 = greedy). With beams, ``"sequence"`` uses the chosen beam's
            per-token log-probabilities (no length penalty).
        max_source_length: truncate tokenised ``input_column`` text to this many tokens.
        is_correct: ``is_correct(prediction, gold) -> bool``; default: :func:`hf_cotmi.metrics.text_accuracy`'s
            rule (exact match after :func:`hf_cotmi.metrics.normalize_text`; an empty gold is never matched).
            Pass e.g. an equation checker for arithmetic tasks.
        chat_template: decoder-only students trained on features built with ``chat_template=True``: raw
            text is prompted as a user turn plus the assistant header, and each candidate is scored as the
            assistant turn (end-of-turn tokens included). The user turn a candidate follows is
            ``prefix + example[input_column]`` where that column is present, else the decoded prompt.
        progress_bar: show a ``tqdm`` progress bar over the examples (on standard error, cleared when done)
            with this description, e.g. ``"test: sequence confidence"``; ``None`` (the default) shows none.
            ``TQDM_DISABLE=1`` in the environment turns it off as it does every ``tqdm`` bar.

    Returns:
        :class:`LabelConfidences` with predictions, references, confidences and correctness.

    Raises:
        ValueError: for an unknown mode, ``"candidates"`` without candidates, a missing column, an example
            without candidates, ``batch_size < 1``, an encoder-decoder student with prompt-learning PEFT
            adapters (prompt tuning, prefix tuning, ...), or (``"first_token"``) a generation whose every step up
            to its end was forced by a logits processor (e.g. ``max_new_tokens=1`` with a forced BOS).

    Examples:
        >>> from hf_cotmi import build_word_tokenizer, build_tiny_seq2seq
        >>> from hf_cotmi.prefixes import PREDICT_PREFIX
        >>> tok = build_word_tokenizer([PREDICT_PREFIX + "a cat sleeps", "yes no"])
        >>> model = build_tiny_seq2seq(tok, "t5")
        >>> r = label_confidences(model, tok, {"input": ["a cat sleeps"], "label": ["yes"]},
        ...                       label_candidates=["yes", "no"])
        >>> r.mode, len(r.candidate_probabilities[0])
        ('candidates', 2)
    """
    import torch

    from .students import eos_token_ids, stop_at_eos_kwargs  # (students -> run_arguments imports this module)

    mode = _resolve_mode(mode, label_candidates, batch_size, num_beams)
    dataset = _nli_inputs_as_trained(dataset, tokenizer, input_column)
    columns = _column_names(dataset)
    needed = _needed_columns(columns, input_column, label_column)
    fixed, candidate_column = _candidate_source(mode, label_candidates, columns)
    if candidate_column is not None:
        needed.append(candidate_column)
    token_ids = _CandidateTokens(tokenizer)
    eos_ids = eos_token_ids(model, tokenizer)
    target_prefix = target_prefix_ids(tokenizer) if mode == "first_token" else []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    generation = {
        **_generation_kwargs(num_beams, max_new_tokens, max_length),
        **stop_at_eos_kwargs(model, eos_ids),
    }

    predictions: list[str] = []
    references: list[str] = []
    confidences: list[float] = []
    candidate_probs: list[np.ndarray] = []
    student_type = resolve_student_type(model)
    causal = student_type == "causal"
    if chat_template:
        check_chat_template_student(student_type)
    if not causal:
        _check_no_prompt_learning(model)
    if causal:
        if chat_template and input_column in columns and input_column not in needed:
            needed.append(input_column)  # the user turn each candidate's assistant turn follows
        if "input_ids" in needed and "labels" in columns and "labels" not in needed:
            needed.append("labels")  # where each example's prompt ends
        generation = _causal_generation_kwargs(model, generation)
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            pad_id = tokenizer.eos_token_id  # generation pads finished rows with it: EOS decodes to nothing
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _examples_progress(progress_bar, num_rows(dataset)) as bar:
            offset = 0
            for batch in _counted(_iter_batches(dataset, needed, batch_size), bar.update):
                if causal:
                    golds = _gold_labels(batch, tokenizer, label_column)
                    references.extend(golds)
                    per_example = (
                        _example_candidates(batch, candidate_column, fixed, offset, len(golds))
                        if mode == "candidates"
                        else None
                    )
                    texts, confs, probs = _causal_batch(
                        model,
                        tokenizer,
                        batch,
                        per_example,
                        mode=mode,
                        prefix=prefix,
                        input_column=input_column,
                        max_source_length=max_source_length,
                        pad_id=pad_id,
                        generation=generation,
                        num_beams=num_beams,
                        eos_ids=eos_ids,
                        batch_size=batch_size,
                        chat_template=chat_template,
                        first_example=offset,
                    )
                    predictions.extend(texts)
                    confidences.extend(confs)
                    candidate_probs.extend(probs)
                    offset += len(golds)
                    continue
                input_ids, attention_mask = _encode(
                    batch, tokenizer, prefix, input_column, max_source_length, pad_id, torch, device
                )
                golds = _gold_labels(batch, tokenizer, label_column)
                references.extend(golds)
                hidden = model.get_encoder()(
                    input_ids=input_ids, attention_mask=attention_mask, return_dict=True
                )[0]
                if mode == "candidates":
                    per_example, candidate_ids = _distinct_candidates(
                        _example_candidates(batch, candidate_column, fixed, offset, len(golds)), token_ids
                    )
                    scores = _score_candidates(
                        model, hidden, attention_mask, candidate_ids, batch_size, torch
                    )
                    for cands, score in zip(per_example, scores):
                        probs = _softmax(score)
                        best = int(np.argmax(probs))
                        candidate_probs.append(probs)
                        predictions.append(cands[best])
                        confidences.append(float(probs[best]))
                else:
                    out = model.generate(
                        encoder_outputs=_encoder_output(hidden), attention_mask=attention_mask, **generation
                    )
                    texts = tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
                    predictions.extend(t.strip() for t in texts)
                    confidences.extend(
                        _generation_confidences(
                            model, out, mode, num_beams, eos_ids, torch, offset, target_prefix, tokenizer
                        )
                    )
                offset += len(golds)
    finally:
        model.train(was_training)
    _check_finite(confidences, model)
    check = is_correct or _default_is_correct
    return LabelConfidences(
        mode=mode,
        predictions=predictions,
        references=references,
        confidences=np.clip(np.asarray(confidences, dtype=np.float64), 0.0, 1.0),
        correct=np.asarray([bool(check(p, g)) for p, g in zip(predictions, references)], dtype=bool),
        candidate_probabilities=candidate_probs if mode == "candidates" else None,
    )


# ---------------------------------------------------------------------------------------------------------
# the steps of label_confidences


def _check_no_prompt_learning(model: Any) -> None:
    """Refuse an encoder-decoder student with prompt-learning adapters: its confidences run the encoder on its
    own (``model.get_encoder()``), which the adapters' virtual tokens never reach."""
    from .peft_methods import prompt_learning_method

    method = prompt_learning_method(model)
    if method is not None:
        raise ValueError(
            f"label_confidences cannot score an encoder-decoder student with {method} adapters: their virtual "
            "tokens exist only inside peft's forward, and the confidences run the encoder on its own; use "
            "adapters that change weights (LoRA, IA3, ...) or merge them, or a decoder-only student"
        )


def check_candidates_mode(mode: str | None, label_candidates: Any, name: str = "mode") -> None:
    """Refuse label candidates beside a generation mode (``"sequence"``, ``"first_token"``), which scores the
    generated label and would ignore them; ``mode`` None (the default, candidates mode when there are
    candidates) passes.

    Args:
        mode: the confidence mode asked for.
        label_candidates: the candidates given (None for none).
        name: the mode's argument name in the caller (``mode`` or ``confidence``), for the message.

    Raises:
        ValueError: naming both arguments and what to do instead.

    Examples:
        >>> check_candidates_mode("candidates", ["yes", "no"]); check_candidates_mode(None, ["yes", "no"])
        >>> try:
        ...     check_candidates_mode("sequence", ["yes", "no"])
        ... except ValueError as error:
        ...     print(str(error).split(";")[0])
        `label_candidates` is used only by `mode='candidates'`
    """
    if mode is not None and mode != "candidates" and label_candidates is not None:
        raise ValueError(
            f"`label_candidates` is used only by `{name}='candidates'`; `{name}={mode!r}` scores the generated "
            f"label and would ignore them: drop `label_candidates`, or use `{name}='candidates'` (or leave "
            f"`{name}` out)"
        )


def _resolve_mode(mode: str | None, label_candidates: Any, batch_size: Any, num_beams: Any) -> str:
    """The confidence mode (default from the candidates), after checking the options."""
    if mode is None:
        mode = "candidates" if label_candidates is not None else "sequence"
    if mode not in CONFIDENCE_MODES:
        raise ValueError(f"`mode` must be one of {CONFIDENCE_MODES}; got {mode!r}")
    if mode == "candidates" and label_candidates is None:
        raise ValueError(
            "`mode='candidates'` needs `label_candidates`: a list of label strings or the name of a column "
            "holding each example's candidates"
        )
    check_candidates_mode(mode, label_candidates)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}")
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"`num_beams` must be a positive integer; got {num_beams!r}")
    return mode


def _check_finite(confidences: list[float], model: Any) -> None:
    """A NaN confidence means the student's outputs are not finite: say so, and name what is broken."""
    bad = [i for i, c in enumerate(confidences) if not np.isfinite(c)]
    if not bad:
        return
    broken = [name for name, p in model.named_parameters() if not bool(p.detach().isfinite().all())]
    cause = (
        f"{len(broken)} of its parameter tensors hold NaN or inf (first: {broken[0]!r}): the training that "
        "produced it diverged (DSSMITrainingArguments(stop_on_non_finite=True), the default, stops such a run)"
        if broken
        else "its parameters are finite, so a forward pass overflows (try float32 instead of float16)"
    )
    raise ValueError(
        f"the student's label probabilities are not finite for {len(bad)} of {len(confidences)} examples "
        f"(first: example {bad[0]}); {cause}"
    )


def _needed_columns(columns: list[str], input_column: str, label_column: str) -> list[str]:
    """The encoder input columns (token ids, else the text) and the gold label column (text, else ids)."""
    if "input_ids" in columns:
        needed = ["input_ids"] + (["attention_mask"] if "attention_mask" in columns else [])
    elif input_column in columns:
        needed = [input_column]
    else:
        raise ValueError(
            f"`dataset` needs an `input_ids` column or a text column `input_column={input_column!r}`; "
            f"it has {columns}"
        )
    if label_column in columns:
        return needed + [label_column]
    if "labels" in columns:
        return needed + ["labels"]
    raise ValueError(
        f"`dataset` needs the gold label: a text column `label_column={label_column!r}` or a `labels` "
        f"column of token ids; it has {columns}"
    )


def _candidate_source(
    mode: str, label_candidates: Any, columns: list[str]
) -> tuple[list[str] | None, str | None]:
    """``(fixed candidates, candidates column)``: at most one is set, both ``None`` outside candidates mode."""
    if mode != "candidates":
        return None, None
    if isinstance(label_candidates, str):
        if label_candidates not in columns:
            raise ValueError(
                f"`label_candidates={label_candidates!r}` names a column that `dataset` lacks (it has "
                f"{columns}); inside a Trainer, set remove_unused_columns=False to keep text columns"
            )
        return None, label_candidates
    fixed = list(dict.fromkeys(str(c) for c in label_candidates))
    if not fixed:
        raise ValueError("`label_candidates` is an empty list; expected at least one label string")
    return fixed, None


class _CandidateTokens:
    """Target token ids of candidate strings, tokenised once each."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, list[int]] = {}

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for text, ids in zip(missing, self.tokenizer(text_target=missing)["input_ids"]):
                self.cache[text] = list(ids)
        return [self.cache[t] for t in texts]


def _generation_kwargs(num_beams: int, max_new_tokens: int | None, max_length: int | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "num_beams": num_beams,
        "do_sample": False,
        "output_scores": True,  # which steps a logits processor forced
        "output_logits": True,  # the model's own probabilities, before the processors
        "return_dict_in_generate": True,
    }
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    elif max_length is not None:
        kwargs["max_length"] = max_length
    return kwargs


def _encode(
    batch: dict[str, list[Any]],
    tokenizer: Any,
    prefix: str,
    input_column: str,
    max_source_length: int | None,
    pad_id: int,
    torch: Any,
    device: Any,
) -> tuple[Any, Any]:
    """Padded encoder ``input_ids`` and ``attention_mask`` of a batch (its token ids, else prefix + text)."""
    if "input_ids" in batch:
        ids = [list(x) for x in batch["input_ids"]]
        masks = batch.get("attention_mask") or [[1] * len(x) for x in ids]
    else:
        encoded = tokenizer(
            [prefix + str(t) for t in batch[input_column]],
            truncation=max_source_length is not None,
            max_length=max_source_length,
        )
        ids, masks = encoded["input_ids"], encoded["attention_mask"]
    return _pad(ids, pad_id, torch, device), _pad([list(m) for m in masks], 0, torch, device)


def _gold_labels(batch: dict[str, list[Any]], tokenizer: Any, label_column: str) -> list[str]:
    if label_column in batch:
        golds = [str(g) for g in batch[label_column]]
    else:
        golds = decode_token_ids(tokenizer, batch["labels"])
    return [g.strip() for g in golds]


def _example_candidates(
    batch: dict[str, list[Any]], column: str | None, fixed: list[str] | None, offset: int, size: int
) -> list[list[str]]:
    """Each example's candidates: its own (the column, duplicates dropped) or the fixed set."""
    if column is None:
        return [fixed] * size  # type: ignore[list-item]
    per_example = []
    for j, cands in enumerate(batch[column]):
        if isinstance(cands, str) or not cands:
            raise ValueError(
                f"column {column!r} of example {offset + j} must be a non-empty list of candidate strings; "
                f"got {cands!r}"
            )
        per_example.append(list(dict.fromkeys(str(c) for c in cands)))
    return per_example


def _distinct_candidates(
    per_example: Sequence[Sequence[str]], tokenise: Callable[[Sequence[str]], list[list[int]]]
) -> tuple[list[list[str]], list[list[list[int]]]]:
    """Each example's candidates and their target ids, without a candidate whose ids repeat an earlier one's.

    Two strings that tokenise alike (``"yes"`` and ``" yes"``, or ``"Yes"`` with a lower-casing tokenizer)
    are one sequence to the model: scoring both would split its probability between them in the softmax.
    The first of them is kept.

    Examples:
        >>> _distinct_candidates([["yes", " yes", "no"]], lambda texts: [[len(t.strip()), 1] for t in texts])
        ([['yes', 'no']], [[[3, 1], [2, 1]]])
    """
    texts_out: list[list[str]] = []
    ids_out: list[list[list[int]]] = []
    for candidates, ids in ((list(c), tokenise(c)) for c in per_example):
        kept: dict[tuple[int, ...], str] = {}
        for text, row in zip(candidates, ids):
            kept.setdefault(tuple(int(t) for t in row), text)
        texts_out.append(list(kept.values()))
        ids_out.append([list(row) for row in kept])
    return texts_out, ids_out


# ---------------------------------------------------------------------------------------------------------
# decoder-only students (the prompt, candidate scoring and generation live in causal_confidence)


def _causal_generation_kwargs(model: Any, generation: dict[str, Any]) -> dict[str, Any]:
    """For a decoder-only student every length limit counts generated tokens only, as in the trainer."""
    kwargs = dict(generation)
    max_length = kwargs.pop("max_length", None)
    if "max_new_tokens" not in kwargs:
        config = getattr(model, "generation_config", None)
        kwargs["max_new_tokens"] = (
            max_length or getattr(config, "max_new_tokens", None) or getattr(config, "max_length", None) or 20
        )
    return kwargs


def _causal_batch(
    model: Any,
    tokenizer: Any,
    batch: dict[str, list[Any]],
    per_example: list[list[str]] | None,
    *,
    mode: str,
    prefix: str,
    input_column: str,
    max_source_length: int | None,
    pad_id: int,
    generation: dict[str, Any],
    num_beams: int,
    eos_ids: set[int],
    batch_size: int,
    chat_template: bool = False,
    first_example: int = 0,
) -> tuple[list[str], list[float], list[np.ndarray]]:
    """Predictions, confidences and (candidates mode) candidate probabilities of one batch, causal student.

    ``first_example`` is the dataset index of the batch's first example (for error messages).
    """
    import torch

    from .causal_confidence import (
        candidate_target_ids,
        causal_prompts,
        fit_prompts_to_candidates,
        fit_prompts_to_room,
        generate_in_groups,
        prompts_of_features,
        score_candidates,
    )
    from .data.causal import check_prompt_rows
    from .students import generation_prompt_limit

    room = None  # generation: the generated tokens need room after the prompt in the student's context
    if per_example is None:
        room = generation_prompt_limit(model, tokenizer, generation.get("max_new_tokens"))
        if room is not None:
            max_source_length = room if max_source_length is None else min(max_source_length, room)
    if "input_ids" in batch:
        if batch.get("labels") is None:
            check_prompt_rows(batch["input_ids"], tokenizer.eos_token_id)
        prompts = prompts_of_features(batch["input_ids"], batch.get("labels"), first_index=first_example)
        if room is not None:  # cut as training cuts: the end of the input goes, a chat template's tail stays
            prompts = fit_prompts_to_room(
                tokenizer,
                prompts,
                room,
                chat_template=True if chat_template else None,
                first_index=first_example,
            )
        if chat_template and input_column in batch:
            prompt_texts = [prefix + str(t) for t in batch[input_column]]
        else:
            prompt_texts = tokenizer.batch_decode(prompts, skip_special_tokens=True)
    else:
        prompt_texts = [prefix + str(t) for t in batch[input_column]]
        prompts = causal_prompts(
            tokenizer, prompt_texts, max_source_length, chat_template=chat_template, first_index=first_example
        )
    if per_example is not None:
        distinct = [
            _distinct_candidates(
                [cands], lambda c, t=text: candidate_target_ids(tokenizer, t, c, chat_template=chat_template)
            )
            for text, cands in zip(prompt_texts, per_example)
        ]
        per_example = [kept[0] for kept, _ in distinct]
        targets = [ids[0] for _, ids in distinct]
        # training cuts a prompt to leave its target room in the context: leave the candidates the same
        prompts = fit_prompts_to_candidates(
            model,
            tokenizer,
            prompts,
            targets,
            chat_template=True if chat_template else (None if "input_ids" in batch else False),
            first_index=first_example,
        )
        scores = score_candidates(model, prompts, targets, pad_id=pad_id, batch_size=batch_size)
        texts, confs, probs = [], [], []
        for cands, score in zip(per_example, scores):
            p = _softmax(score)
            best = int(np.argmax(p))
            texts.append(cands[best])
            confs.append(float(p[best]))
            probs.append(p)
        return texts, confs, probs
    texts, confs = [""] * len(prompts), [0.0] * len(prompts)
    for rows, out, width in generate_in_groups(model, prompts, pad_id=pad_id, **generation):
        decoded = tokenizer.batch_decode(out.sequences[:, width:], skip_special_tokens=True)
        examples = [first_example + row for row in rows]
        scored = _generation_confidences(
            model, out, mode, num_beams, eos_ids, torch, examples, tokenizer=tokenizer
        )
        for row, text, confidence in zip(rows, decoded, scored):
            texts[row], confs[row] = text.strip(), confidence
    return texts, confs, []
