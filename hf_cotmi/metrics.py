"""Accuracy metrics for distilled students: text exact match and equation value match.

Everything here is a pure function except :func:`build_compute_metrics`, which wraps them for the
``compute_metrics`` hook of a ``Seq2SeqTrainer`` run with ``predict_with_generate=True``.

SVAMP labels are equations such as ``( 84.0 / 2.0 )``; DSS scored a predicted equation by the value Python's
``eval`` gave it. :func:`safe_eval_arithmetic` computes that value with a small recursive-descent parser that
accepts numbers, ``+ - * /``, parentheses and unary minus and nothing else, so model output is never run.

Examples:
    >>> safe_eval_arithmetic("( 84.0 / 2.0 )")
    42.0
    >>> equation_accuracy(["(84 / 2)", "(3 + 4)"], ["( 84.0 / 2.0 )", "( 2.0 * 4.0 )"])
    0.5
    >>> text_accuracy(["Wooded area.", "bridge"], ["wooded area", "beach"])
    0.5
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "MAX_NESTING_DEPTH",
    "safe_eval_arithmetic",
    "normalize_text",
    "equation_accuracy",
    "text_accuracy",
    "build_compute_metrics",
    "decode_token_ids",
    "METRICS",
]

logger = logging.getLogger(__name__)

MAX_EXPRESSION_LENGTH = 1000
"""Longest string (in characters) :func:`safe_eval_arithmetic` will look at; longer gives None."""

MAX_NESTING_DEPTH = 64
"""Deepest nesting of parentheses and unary minus signs :func:`safe_eval_arithmetic` accepts."""

# "39. 0" or "39 .0" (a decimal number split by a subword decoder) -> "39.0"
_SPLIT_DECIMAL = re.compile(r"(?<=[0-9])[ \t]*\.[ \t]*(?=[0-9])")
_TOKEN = re.compile(r"\s*(?:(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)|(?P<op>[-+*/()]))")
_WHITESPACE = re.compile(r"\s+")


class _Reject(Exception):
    """Internal: the expression is not acceptable arithmetic."""


def _tokenize(text: str) -> list[str | float]:
    tokens: list[str | float] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _Reject
        number = match.group("number")
        tokens.append(float(number) if number is not None else match.group("op"))
        pos = match.end()
    return tokens


class _Parser:
    """expr := term (('+' | '-') term)* ; term := unary (('*' | '/') unary)* ;
    unary := '-' unary | primary ; primary := NUMBER | '(' expr ')'"""

    def __init__(self, tokens: list[str | float]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def _peek(self) -> str | float | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING_DEPTH:
            raise _Reject

    def parse(self) -> float:
        value = self._expr()
        if self.pos != len(self.tokens):
            raise _Reject
        return value

    def _expr(self) -> float:
        value = self._term()
        while self._peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            right = self._term()
            value = _finite(value + right if op == "+" else value - right)
        return value

    def _term(self) -> float:
        value = self._unary()
        while self._peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            right = self._unary()
            if op == "*":
                value = _finite(value * right)
            else:
                if right == 0:
                    raise _Reject
                value = _finite(value / right)
        return value

    def _unary(self) -> float:
        if self._peek() == "-":
            self.pos += 1
            self._enter()
            value = -self._unary()
            self.depth -= 1
            return value
        return self._primary()

    def _primary(self) -> float:
        token = self._peek()
        if isinstance(token, float):
            self.pos += 1
            return _finite(token)
        if token == "(":
            self.pos += 1
            self._enter()
            value = self._expr()
            if self._peek() != ")":
                raise _Reject
            self.pos += 1
            self.depth -= 1
            return value
        raise _Reject


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise _Reject
    return value


def safe_eval_arithmetic(text: str) -> float | None:
    """Evaluate an arithmetic expression without executing anything; None if it is not one.

    Accepted: decimal numbers (``12``, ``12.5``, ``.5``; ASCII digits, no exponents, signs or separators),
    the binary operators ``+ - * /`` with the usual precedence and left associativity, parentheses and unary
    minus, separated by any whitespace. Anything else gives None: names, calls, attributes, subscripts,
    ``**``, ``//``, ``%``, text around the expression, an empty string, a string longer than
    :data:`MAX_EXPRESSION_LENGTH` characters, nesting deeper than :data:`MAX_NESTING_DEPTH`, division by zero,
    and any intermediate or final value that is not finite. The function never raises and never calls
    ``eval``: the string is scanned by a regular expression and parsed by recursive descent.

    Normalisation: a decimal point with spaces or tabs beside it between two digits is closed up, because
    subword decoders return ``39.0`` as ``39. 0``; so ``39 . 0`` reads as ``39.0``. Nothing else is rewritten.

    Args:
        text: the expression, e.g. a SVAMP label ``( 84.0 / 2.0 )`` or a decoded model prediction.

    Returns:
        The value as a float, or None.

    Examples:
        >>> safe_eval_arithmetic("( ( 17.0 + 15.0 ) + 2.0 )")
        34.0
        >>> safe_eval_arithmetic("-(3 - 39. 0) / 4")
        9.0
        >>> safe_eval_arithmetic("__import__('os').system('ls')") is None
        True
        >>> safe_eval_arithmetic("1 / 0") is None
        True
    """
    try:
        if not isinstance(text, str) or len(text) > MAX_EXPRESSION_LENGTH:
            return None
        tokens = _tokenize(_SPLIT_DECIMAL.sub(".", text))
        if not tokens:
            return None
        return _Parser(tokens).parse()
    except (_Reject, ArithmeticError, ValueError, RecursionError):
        return None


def normalize_text(text: str) -> str:
    """Normalise an answer for exact-match comparison.

    Unicode NFKC, case folding, runs of whitespace collapsed to one space, surrounding whitespace removed,
    then trailing periods removed (PaLM and students often end an answer with one).

    Examples:
        >>> normalize_text("  Wooded   Area. ")
        'wooded area'
    """
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = _WHITESPACE.sub(" ", text).strip()
    return text.rstrip(".").rstrip()


def _check_lengths(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must have the same length; got {len(predictions)} predictions "
            f"and {len(references)} references"
        )
    if len(predictions) == 0:
        raise ValueError("accuracy of an empty list is undefined: got 0 predictions and 0 references")


def equation_accuracy(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    rel_tol: float = 1e-9,
    abs_tol: float = 1e-9,
) -> float:
    """Fraction of predicted equations whose value equals the reference equation's value.

    Both sides are evaluated with :func:`safe_eval_arithmetic`. A prediction or reference that does not
    evaluate counts as wrong. Values are compared with ``math.isclose(rel_tol, abs_tol)`` so that
    ``(a * b) / c`` and ``a * (b / c)`` agree despite rounding; DSS compared exact float values.

    Args:
        predictions: predicted equations, e.g. ``"(84 / 2)"``.
        references: gold equations, e.g. ``"( 84.0 / 2.0 )"``.
        rel_tol: relative tolerance of the value comparison.
        abs_tol: absolute tolerance of the value comparison.

    Returns:
        Accuracy in [0, 1].

    Raises:
        ValueError: the sequences differ in length or are empty.

    Examples:
        >>> equation_accuracy(["(10 - (3 + 6))", "5 +"], ["( ( 10.0 - 3.0 ) - 6.0 )", "( 2.0 + 3.0 )"])
        0.5
    """
    _check_lengths(predictions, references)
    correct = 0
    for prediction, reference in zip(predictions, references):
        predicted, gold = safe_eval_arithmetic(prediction), safe_eval_arithmetic(reference)
        if predicted is not None and gold is not None:
            correct += math.isclose(predicted, gold, rel_tol=rel_tol, abs_tol=abs_tol)
    return correct / len(predictions)


def text_accuracy(predictions: Sequence[str], references: Sequence[str], *, normalize: bool = True) -> float:
    """Fraction of predictions that equal their reference, after :func:`normalize_text` by default.

    A reference that is empty (after normalisation; blank when ``normalize=False``) has no answer to match:
    it counts as wrong, as an equation that does not evaluate does, so a student that generates nothing
    does not score on it.

    Args:
        predictions: predicted answers.
        references: gold answers.
        normalize: compare normalised texts (case-folded, whitespace collapsed, trailing periods removed);
            False compares the strings exactly, as DSS did.

    Returns:
        Accuracy in [0, 1].

    Raises:
        ValueError: the sequences differ in length or are empty.

    Examples:
        >>> text_accuracy(["Neutral", "entailment"], ["neutral", "contradiction"])
        0.5
        >>> text_accuracy(["Neutral"], ["neutral"], normalize=False)
        0.0
        >>> text_accuracy(["", "yes"], ["", "yes"])
        0.5
    """
    _check_lengths(predictions, references)
    if normalize:
        pairs = [(normalize_text(p), normalize_text(r)) for p, r in zip(predictions, references)]
        correct = sum(bool(r) and p == r for p, r in pairs)
    else:
        correct = sum(bool(str(r).strip()) and p == r for p, r in zip(predictions, references))
    return correct / len(predictions)


METRICS: tuple[str, ...] = ("text", "equation")
"""How answers are compared: normalised exact match, or the value of an arithmetic expression."""


def _as_array_like(array: Any) -> Any:
    """A ``(ids, ...)`` tuple from the Trainer reduced to its first element; a tensor (``batch_eval_metrics``
    hands the gathered batch, maybe on a GPU) to a NumPy array; anything else as it is."""
    if isinstance(array, tuple):
        array = array[0]
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return array


def _is_batch_list(array: Any) -> bool:
    """Whether ``array`` is one entry per batch (``eval_do_concat_batches=False``), not rows."""
    import numpy as np

    return isinstance(array, list) and bool(array) and (isinstance(array[0], tuple) or np.ndim(array[0]) >= 2)


def _label_batches(label_ids: Any, sizes: list[int]) -> list[Any]:
    """``label_ids`` split like predictions given as one entry per batch of ``sizes`` rows: labels given per
    batch as well are taken as they are, rows (an array, ragged lists) are sliced."""
    if label_ids is None:
        return [None] * len(sizes)
    if _is_batch_list(label_ids):
        if len(label_ids) != len(sizes):
            raise ValueError(
                f"label_ids hold {len(label_ids)} batches but the predictions {len(sizes)}; give both per batch "
                "or both as one array"
            )
        return list(label_ids)
    rows = list(_as_array_like(label_ids))
    if len(rows) != sum(sizes):
        raise ValueError(f"label_ids hold {len(rows)} rows but the predictions {sum(sizes)}")
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [rows[start : start + size] for start, size in zip(starts, sizes)]


_warned_unaligned_labels = False


def _label_positions(label_ids: Any, shape: tuple[int, int]) -> Any:
    """Which positions of argmax ids of ``shape`` (rows, width) predict a label: where ``label_ids`` (aligned
    with the logits from the first position, as the Trainer returns them) is not negative. None when the labels
    cannot be aligned (a label beyond the logits' width, as a decoder-only student's full-width labels have when
    another trainer returns them): the rows are then cut at their first EOS alone, with a warning."""
    import numpy as np

    global _warned_unaligned_labels
    label_ids = _as_array_like(label_ids)
    rows = [np.asarray(row).reshape(-1) for row in label_ids]
    if len(rows) != shape[0]:
        raise ValueError(f"label_ids hold {len(rows)} rows but the logits {shape[0]}")
    width = max([shape[1], *(len(row) for row in rows)])
    labels = np.full((shape[0], width), -100, dtype=np.int64)
    for i, row in enumerate(rows):
        labels[i, : len(row)] = row
    if (labels[:, shape[1] :] >= 0).any():
        if not _warned_unaligned_labels:
            logger.warning(
                "label_ids are %d wide and hold labels beyond the logits' %d positions, so they are not aligned "
                "with the logits (labels covering a decoder-only student's prompt too): each predicted row is "
                "cut at its first EOS only, and may read the argmax over its batch's padding",
                labels.shape[1],
                shape[1],
            )
            _warned_unaligned_labels = True
        return None
    return labels[:, : shape[1]] >= 0


def _token_id_rows(
    array: Any, pad_id: int, eos_id: int | None = None, label_ids: Any = None
) -> list[list[int]]:
    """Rows of token ids. Logits are reduced by argmax and each row keeps only its positions that predict a
    label (``label_ids`` not negative there), up to its first ``eos_id``: a teacher-forced row's argmax runs
    on over its batch's padding, which is no prediction. Without ``label_ids`` the first EOS alone ends a row,
    so a row the student does not end with EOS reads that padding too."""
    import numpy as np

    array = _as_array_like(array)
    if _is_batch_list(array):  # one entry per batch (eval_do_concat_batches=False): its rows, in order
        sizes = [len(_as_array_like(batch)) for batch in array]
        batches = zip(array, _label_batches(label_ids, sizes))
        return [row for batch, labels in batches for row in _token_id_rows(batch, pad_id, eos_id, labels)]
    if isinstance(array, list) and array and not np.isscalar(array[0]):  # rows, possibly ragged
        return [[pad_id if int(t) < 0 else int(t) for t in row] for row in array]
    values = np.asarray(array)
    if values.ndim == 3:  # logits (predict_with_generate=False): take the most likely token
        values = values.argmax(axis=-1)
        keep = np.ones(values.shape, dtype=bool)
        if label_ids is not None:
            label_positions = _label_positions(label_ids, values.shape)
            if label_positions is not None:
                keep = label_positions
        if eos_id is not None:  # generation stops at the first EOS: nothing after it is predicted
            is_eos = (values == eos_id) & keep
            keep &= np.cumsum(is_eos, axis=1) - is_eos == 0
        values = np.where(keep, values, pad_id)
    if values.ndim == 1:  # one row of ids; an empty one is no rows, as an empty list is
        values = values[None, :] if values.size else values.reshape(0, 0)
    if values.ndim != 2:
        raise ValueError(f"expected token ids of shape (batch, length); got an array of shape {values.shape}")
    values = values.astype(np.int64, copy=True)
    values[values < 0] = pad_id  # -100 padding from the collator and from the Trainer's gathering
    return values.tolist()


def build_compute_metrics(
    tokenizer: Any, task: Any = "text", *, prediction_parser: Callable[[str], str] | None = None
) -> Callable[[Any], dict[str, float]]:
    """Build a ``compute_metrics`` function for a ``Seq2SeqTrainer`` with ``predict_with_generate=True``.

    The returned function takes an ``EvalPrediction``. Its ``predictions`` are generated token ids (a tuple
    is reduced to its first element; an array of logits, shape (batch, length, vocab), is reduced by argmax
    and each row read at its label positions up to its first EOS, as :func:`decode_token_ids` does with
    ``label_ids``, so that the argmax over the padding of the row's batch is not read; a list of per-batch
    arrays, from ``eval_do_concat_batches=False``, is read batch after batch) and its ``label_ids`` hold the
    gold ids. Negative ids (the ``-100`` padding) become the pad id, both are
    decoded with ``skip_special_tokens=True``, and the texts are compared with :func:`text_accuracy`
    (``task="text"``) or :func:`equation_accuracy` (``task="equation"``).

    Args:
        tokenizer: the student's tokenizer; it needs a pad token (or an EOS token, used instead).
        task: ``"text"`` (CQA, e-SNLI, ANLI) or ``"equation"`` (SVAMP), or a :class:`~hf_cotmi.tasks.TaskSpec`
            (its ``metric``).
        prediction_parser: applied to each decoded prediction before it is compared (e.g.
            :func:`hf_cotmi.data.parsing.parse_single_task_label` when the student writes rationale and label
            in one target); references are compared as decoded.

    Returns:
        A function ``EvalPrediction -> {"accuracy": float}``. It also serves ``batch_eval_metrics=True``: the
        Trainer then calls it once per (gathered) batch with ``compute_result=False`` and on the last batch
        with ``compute_result=True``; it counts the correct rows of each batch, returns ``{}`` until the last
        one, then the accuracy over all the rows it was given and starts afresh for the next evaluation.

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> from transformers import EvalPrediction
        >>> tok = build_word_tokenizer(["( 84.0 / 2.0 )", "( 42.0 * 1.0 )"])
        >>> ids = tok(["( 84.0 / 2.0 )"])["input_ids"]
        >>> gold = tok(["( 42.0 * 1.0 )"])["input_ids"]
        >>> compute_metrics = build_compute_metrics(tok, task="equation")
        >>> compute_metrics(EvalPrediction(predictions=ids, label_ids=gold))
        {'accuracy': 1.0}
        >>> compute_metrics(EvalPrediction(predictions=ids, label_ids=ids), compute_result=False)
        {}
        >>> compute_metrics(EvalPrediction(predictions=ids, label_ids=gold), compute_result=True)
        {'accuracy': 1.0}
    """
    task = getattr(task, "metric", task)  # a TaskSpec gives its metric
    if task not in METRICS:
        raise ValueError(f"task={task!r} is not supported; expected one of {METRICS}")
    pad_id = _padding_id(tokenizer)
    score = equation_accuracy if task == "equation" else text_accuracy
    batches = _BatchAccuracy()

    def compute_metrics(eval_prediction: Any, compute_result: bool | None = None) -> dict[str, float]:
        decoded_predictions = decode_token_ids(
            tokenizer, eval_prediction.predictions, pad_id, label_ids=eval_prediction.label_ids
        )
        if prediction_parser is not None:
            decoded_predictions = [prediction_parser(text) for text in decoded_predictions]
        decoded_references = decode_token_ids(tokenizer, eval_prediction.label_ids, pad_id)
        if compute_result is None:  # the whole evaluation at once
            return {"accuracy": float(score(decoded_predictions, decoded_references))}
        batches.add(score, decoded_predictions, decoded_references)
        return {"accuracy": batches.result()} if compute_result else {}

    return compute_metrics


class _BatchAccuracy:
    """Correct and total rows over the batches of one ``batch_eval_metrics`` evaluation."""

    def __init__(self) -> None:
        self.correct = 0
        self.rows = 0

    def add(self, score: Callable[..., float], predictions: list[str], references: list[str]) -> None:
        if len(predictions) != len(references):
            _check_lengths(predictions, references)
        if predictions:  # a batch of no rows adds nothing
            self.correct += round(score(predictions, references) * len(predictions))
            self.rows += len(predictions)

    def result(self) -> float:
        """The accuracy over all batches added so far; the count starts again at zero."""
        correct, rows = self.correct, self.rows
        self.correct = self.rows = 0
        if rows == 0:
            raise ValueError("accuracy of an empty list is undefined: the evaluation's batches held no rows")
        return correct / rows


def _padding_id(tokenizer: Any) -> int:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError(
            "the tokenizer has neither a pad token nor an EOS token to replace -100 padding with"
        )
    return int(pad_id)


def decode_token_ids(
    tokenizer: Any, ids: Any, pad_id: int | None = None, *, label_ids: Any = None
) -> list[str]:
    """Decode rows of token ids to text: negative ids (``-100`` padding) become the pad id first.

    Logits (``predict_with_generate=False``) are teacher-forced: their argmax runs on over the positions after
    a row's end in its padded batch. Each row is therefore read at the positions of its labels only (where
    ``label_ids`` is not negative), up to its first EOS, so it decodes as it does in a batch of its own. Without
    ``label_ids`` the first EOS alone ends a row; a row whose argmax at its label's EOS is another token then
    also reads the padding's argmax, which depends on the batch.

    Args:
        tokenizer: the student's tokenizer.
        ids: rows of ids (array, tensor, ragged lists, a ``(ids, ...)`` tuple, a list of per-batch arrays) or
            logits of shape (batch, length, vocab), read as their argmax.
        pad_id: the id that replaces negative ids (default: the pad token, else EOS).
        label_ids: for logits, the labels they are scored against, position by position (what the Trainer
            returns as ``label_ids``: for a decoder-only student its target window), in the same layout as
            ``ids`` (one array, or one per batch); ignored for token ids. Labels with a label beyond the
            logits' width cannot be aligned with them: the rows are then cut at their first EOS only, with a
            warning.

    Returns:
        One text per row; no rows (``[]``, an empty array) give ``[]``.

    Raises:
        ValueError: ``label_ids`` hold another number of rows (or batches) than ``ids``.

    Examples:
        >>> import numpy as np
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> tok = build_word_tokenizer(["yes no"])
        >>> yes, no = tok.convert_tokens_to_ids(["yes", "no"])
        >>> decode_token_ids(tok, [[yes, -100]])
        ['yes']
        >>> logits = np.eye(len(tok))[[[yes, no, no]]]  # the argmax: "yes no no", where the label is yes + EOS
        >>> decode_token_ids(tok, logits), decode_token_ids(tok, logits, label_ids=[[yes, tok.eos_token_id, -100]])
        (['yes no no'], ['yes no'])
    """
    eos_id = getattr(tokenizer, "eos_token_id", None)
    rows = _token_id_rows(ids, _padding_id(tokenizer) if pad_id is None else pad_id, eos_id, label_ids)
    if not rows:  # some transformers releases decode no rows as one empty text
        return []
    return tokenizer.batch_decode(rows, skip_special_tokens=True)
