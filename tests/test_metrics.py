"""Metrics: safe arithmetic evaluation (including hostile input), equation/text accuracy, compute_metrics."""

from __future__ import annotations

import builtins
import contextlib
import math
import operator
import random
from unittest import mock

import numpy as np
import pytest

from hf_cotmi import build_compute_metrics, equation_accuracy, safe_eval_arithmetic, text_accuracy
from hf_cotmi.metrics import MAX_EXPRESSION_LENGTH, MAX_NESTING_DEPTH, normalize_text


def _refuse(*args, **kwargs):
    raise AssertionError("eval/exec/compile was called")


def safe_eval(text):
    """safe_eval_arithmetic with eval, exec and compile made to fail while it runs."""
    with contextlib.ExitStack() as stack:
        for name in ("eval", "exec", "compile"):
            stack.enter_context(mock.patch.object(builtins, name, _refuse))
        return safe_eval_arithmetic(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("( 84.0 / 2.0 )", 42.0),
        ("( ( 17.0 + 15.0 ) + 2.0 )", 34.0),
        ("(10 - (3 + 6))", 1.0),
        ("2 + 3 * 4", 14.0),
        ("(2 + 3) * 4", 20.0),
        ("8 - 3 - 2", 3.0),  # left associative
        ("8 / 4 / 2", 1.0),
        ("-3 + 5", 2.0),
        ("3 * -2", -6.0),
        ("--3", 3.0),
        ("-(4 - 10) / 3", 2.0),
        ("7", 7.0),
        (".5 + 1.", 1.5),
        ("  12.25\t*\n4 ", 49.0),
        ("39. 0 + 1", 40.0),  # subword decoders split decimals
        ("( 84. 0 / 2 .0 )", 42.0),
        ("1 - 0.1 - 0.2", 1 - 0.1 - 0.2),
    ],
)
def test_safe_eval_values(text, expected):
    assert safe_eval(text) == pytest.approx(expected, rel=1e-12, abs=0)


HOSTILE = [
    "__import__('os').system('echo pwned')",
    "open('/etc/passwd').read()",
    "().__class__.__bases__[0].__subclasses__()",
    "(1).__class__",
    "x",
    "x + 1",
    "abs(-1)",
    "[1, 2][0]",
    "{1: 2}[1]",
    "'1' + '2'",
    "2 ** 10",
    "2**1000",
    "7 // 2",
    "7 % 2",
    "1 if 1 else 2",
    "lambda: 1",
    "1; 2",
    "1, 2",
    "1 == 1",
    "~1",
    "+1",
    "1e5",
    "1E5",
    "0x10",
    "1_000",
    "nan",
    "inf",
    "-inf",
    "1 / 0",
    "1 / (2 - 2)",
    "0 / 0",
    "1.2.3",
    "1 2",
    "1 + ",
    "* 2",
    "()",
    "(1",
    "1)",
    "",
    "   ",
    "\u0661\u0662",  # Arabic-Indic digits: float() would accept them
    "\uff11\uff12",  # full-width digits
    "1\u22122",  # a Unicode minus sign
    "(10 * 45).",
    "The answer is (10 * 45)",
    "9" * 400,  # float() gives inf
    "9" * 200 + " * " + "9" * 200,  # overflows to inf
    "1 / (" + "9" * 200 + " * " + "9" * 200 + ")",  # finite result through an infinite intermediate
    "(" * (MAX_NESTING_DEPTH + 1) + "1" + ")" * (MAX_NESTING_DEPTH + 1),
    "-" * (MAX_NESTING_DEPTH + 1) + "1",
    "(" * 10_000 + "1" + ")" * 10_000,  # would blow the recursion limit if unchecked
    "1" + " + 1" * MAX_EXPRESSION_LENGTH,  # too long
    "\x00",
    "1\x00",
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda s: repr(s[:30]))
def test_safe_eval_rejects(text):
    assert safe_eval(text) is None


@pytest.mark.parametrize("value", [None, 3, 2.5, b"1 + 1", ["1"], object()])
def test_safe_eval_non_strings(value):
    assert safe_eval(value) is None


def test_safe_eval_limits_are_inclusive():
    depth = MAX_NESTING_DEPTH
    assert safe_eval("(" * depth + "1" + ")" * depth) == 1.0
    assert safe_eval("-" * depth + "1") == (-1.0) ** depth
    text = "1" + " + 1" * 100
    text = text + " " * (MAX_EXPRESSION_LENGTH - len(text))
    assert len(text) == MAX_EXPRESSION_LENGTH
    assert safe_eval(text) == 101.0


_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _random_expression(rng: random.Random, depth: int) -> tuple[str, float | None]:
    """A fully parenthesised expression and its value, computed while building it."""
    if depth == 0 or rng.random() < 0.3:
        value = rng.choice([rng.randint(0, 99), round(rng.uniform(0, 100), rng.randint(0, 3))])
        if rng.random() < 0.2:
            return f"-{value}", -float(value)
        return str(value), float(value)
    op = rng.choice(list(_OPS))
    left, lv = _random_expression(rng, depth - 1)
    right, rv = _random_expression(rng, depth - 1)
    if lv is None or rv is None or (op == "/" and rv == 0):
        value = None
    else:
        value = _OPS[op](lv, rv)
    return f"( {left} {op} {right} )", value


def test_safe_eval_random_expressions_match_their_values():
    rng = random.Random(1234)
    checked = 0
    for _ in range(500):
        text, value = _random_expression(rng, rng.randint(1, 5))
        result = safe_eval(text)
        if value is None:
            assert result is None, text
        else:
            assert result == value, text
            checked += 1
    assert checked > 300


def test_safe_eval_random_garbage_never_raises():
    rng = random.Random(99)
    alphabet = "0123456789 .+-*/()eEx_[]'\"abc,;:=%~^\\\n\t\u00a0\u2212\u0661"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        result = safe_eval(text)
        assert result is None or (isinstance(result, float) and math.isfinite(result)), text


def test_equation_accuracy_compares_values():
    predictions = ["(84 / 2)", "(10 - (3 + 6))", "(3 + 4)", "import os", "(1 / 3) * 3"]
    references = ["( 84.0 / 2.0 )", "( ( 10.0 - 3.0 ) - 6.0 )", "( 2.0 * 4.0 )", "( 1.0 + 1.0 )", "( 1.0 )"]
    assert equation_accuracy(predictions, references) == pytest.approx(3 / 5)
    # exact comparison loses the rounded one
    assert equation_accuracy(predictions, references, rel_tol=0.0, abs_tol=0.0) == pytest.approx(
        (2 + (1 / 3 * 3 == 1.0)) / 5
    )


def test_equation_accuracy_unparseable_reference_is_wrong():
    assert equation_accuracy(["1"], ["one"]) == 0.0
    assert equation_accuracy(["x"], ["x"]) == 0.0


@pytest.mark.parametrize("metric", [equation_accuracy, text_accuracy])
def test_accuracy_argument_errors(metric):
    with pytest.raises(ValueError, match="same length; got 2 predictions and 1 references"):
        metric(["1", "2"], ["1"])
    with pytest.raises(ValueError, match="empty"):
        metric([], [])


def test_text_accuracy_normalises():
    predictions = ["Wooded Area.", "  bridge ", "entailment", "neutral", "new  york"]
    references = ["wooded area", "bridge", "contradiction", "Neutral", "new york"]
    assert text_accuracy(predictions, references) == pytest.approx(4 / 5)
    assert text_accuracy(predictions, references, normalize=False) == 0.0
    assert text_accuracy(["a"], ["a"], normalize=False) == 1.0


@pytest.mark.parametrize(
    ("prediction", "reference", "normalize"),
    [("", "", True), (".", "", True), ("", ".", True), ("", "\n", True), ("", "", False), (" ", " ", False)],
)
def test_text_accuracy_never_matches_an_empty_reference(prediction, reference, normalize):
    """A blank gold answer has nothing to match: a student that generates nothing must not score on it
    (as an equation that does not evaluate, it counts as wrong)."""
    assert text_accuracy([prediction, "yes"], [reference, "yes"], normalize=normalize) == 0.5


def test_normalize_text():
    assert normalize_text(" Washington  D.C. ") == "washington d.c"
    assert normalize_text("ＡＢＣ") == "abc"  # NFKC
    assert normalize_text("...") == ""


@pytest.fixture(scope="module")
def tokenizer():
    from hf_cotmi.tiny import build_word_tokenizer

    return build_word_tokenizer(["( 84.0 / 2.0 ) ( 42.0 * 1.0 ) ( 3.0 + 4.0 ) wooded area bridge beach"])


def _ids(tokenizer, texts, width, pad):
    rows = [tokenizer(text)["input_ids"] for text in texts]
    return np.array([row + [pad] * (width - len(row)) for row in rows])


def test_compute_metrics_equation_handles_minus_100(tokenizer):
    from transformers import EvalPrediction

    preds = _ids(tokenizer, ["( 84.0 / 2.0 )", "( 3.0 + 4.0 )", "( 42.0 * 1.0 )"], 9, -100)
    labels = _ids(tokenizer, ["( 42.0 * 1.0 )", "( 42.0 * 1.0 )", "( 84.0 / 2.0 )"], 8, -100)
    compute = build_compute_metrics(tokenizer, task="equation")
    assert compute(EvalPrediction(predictions=preds, label_ids=labels)) == {"accuracy": pytest.approx(2 / 3)}
    # a tuple of (generated ids, something else): the first element is used
    result = compute(EvalPrediction(predictions=(preds, np.zeros(3)), label_ids=labels))
    assert result == {"accuracy": pytest.approx(2 / 3)}


def test_compute_metrics_text(tokenizer):
    from transformers import EvalPrediction

    preds = _ids(tokenizer, ["wooded area", "beach"], 5, tokenizer.pad_token_id)
    labels = _ids(tokenizer, ["wooded area", "bridge"], 4, -100)
    compute = build_compute_metrics(tokenizer)
    assert compute(EvalPrediction(predictions=preds, label_ids=labels)) == {"accuracy": 0.5}
    # ragged lists of rows work too
    ragged = [tokenizer("beach")["input_ids"], tokenizer("bridge")["input_ids"] + [-100, -100]]
    assert compute(EvalPrediction(predictions=ragged, label_ids=ragged)) == {"accuracy": 1.0}


def test_compute_metrics_logits_are_argmaxed(tokenizer):
    from transformers import EvalPrediction

    labels = _ids(tokenizer, ["wooded area", "bridge"], 4, -100)
    logits = np.zeros((2, 4, len(tokenizer)), dtype=np.float32)
    gold = np.where(labels < 0, tokenizer.pad_token_id, labels)
    for i in range(2):
        for j in range(4):
            logits[i, j, gold[i, j]] = 1.0
    result = build_compute_metrics(tokenizer)(EvalPrediction(predictions=logits, label_ids=labels))
    assert result == {"accuracy": 1.0}


def _one_hot_logits(tokenizer, rows: list[list[str]], width: int) -> np.ndarray:
    """Logits whose argmax is each row's tokens, then ``bridge`` over the rest of the width (what a student
    predicts at the positions after its target, which a padded batch holds)."""
    filler = tokenizer.convert_tokens_to_ids("bridge")
    logits = np.zeros((len(rows), width, len(tokenizer)), dtype=np.float32)
    for i, tokens in enumerate(rows):
        ids = tokenizer.convert_tokens_to_ids(tokens)
        for j in range(width):
            logits[i, j, ids[j] if j < len(ids) else filler] = 1.0
    return logits


def test_logits_give_the_same_predictions_and_accuracy_alone_or_in_a_padded_batch(tokenizer):
    """predict_with_generate=False: the label logits of a batch reach past a short row's EOS (its padding);
    the argmax there is no prediction, so each row decodes as it does alone, up to its first EOS."""
    from transformers import EvalPrediction

    from hf_cotmi.metrics import decode_token_ids

    eos = tokenizer.eos_token
    rows = [["wooded", "area", eos], ["beach", eos], ["bridge", "beach", "area", eos]]
    labels = _ids(tokenizer, ["wooded area", "beach", "bridge beach area"], 4, -100)
    compute = build_compute_metrics(tokenizer)
    alone = [decode_token_ids(tokenizer, _one_hot_logits(tokenizer, [row], len(row)))[0] for row in rows]
    assert alone == ["wooded area", "beach", "bridge beach area"]
    batch = _one_hot_logits(tokenizer, rows, 4)
    assert decode_token_ids(tokenizer, batch) == alone  # not "beach bridge bridge"
    assert compute(EvalPrediction(predictions=batch, label_ids=labels)) == {"accuracy": 1.0}
    per_batch = [_one_hot_logits(tokenizer, rows[:1], 5), _one_hot_logits(tokenizer, rows[1:], 6)]
    assert compute(EvalPrediction(predictions=per_batch, label_ids=[labels[:1], labels[1:]])) == {
        "accuracy": 1.0
    }


def test_compute_metrics_reads_per_batch_arrays_as_one_evaluation(tokenizer):
    """``eval_do_concat_batches=False`` hands a list of per-batch arrays (of their own widths, or tuples of
    generated ids and more); the accuracy is that of the same rows evaluated as one array."""
    from transformers import EvalPrediction

    predicted = ["( 84.0 / 2.0 )", "( 3.0 + 4.0 )", "( 42.0 * 1.0 )", "( 3.0 + 4.0 )"]
    gold = ["( 42.0 * 1.0 )", "( 42.0 * 1.0 )", "( 84.0 / 2.0 )", "( 3.0 + 4.0 )"]
    compute = build_compute_metrics(tokenizer, task="equation")
    whole = compute(
        EvalPrediction(
            predictions=_ids(tokenizer, predicted, 9, -100), label_ids=_ids(tokenizer, gold, 9, -100)
        )
    )
    assert whole == {"accuracy": pytest.approx(3 / 4)}
    batches = [_ids(tokenizer, predicted[:3], 9, -100), _ids(tokenizer, predicted[3:], 7, -100)]
    labels = [_ids(tokenizer, gold[:3], 8, -100), _ids(tokenizer, gold[3:], 10, -100)]
    assert compute(EvalPrediction(predictions=batches, label_ids=labels)) == whole
    with_rationales = [(batch, np.zeros((len(batch), 2), dtype=np.int64)) for batch in batches]
    assert compute(EvalPrediction(predictions=with_rationales, label_ids=labels)) == whole


def test_compute_metrics_serves_batch_eval_metrics(tokenizer):
    """``batch_eval_metrics=True``: one call per batch of tensors, ``compute_result=True`` on the last; the
    accuracy is that of all rows at once, and the next evaluation starts from zero."""
    import inspect

    import torch
    from transformers import EvalPrediction

    predicted = ["( 84.0 / 2.0 )", "( 3.0 + 4.0 )", "( 42.0 * 1.0 )", "( 3.0 + 4.0 )", "( 1.0 + 1.0 )"]
    gold = ["( 42.0 * 1.0 )", "( 42.0 * 1.0 )", "( 84.0 / 2.0 )", "( 3.0 + 4.0 )", "( 3.0 + 4.0 )"]
    compute = build_compute_metrics(tokenizer, task="equation")
    assert "compute_result" in inspect.signature(compute).parameters  # what the Trainer checks
    whole = compute(
        EvalPrediction(
            predictions=_ids(tokenizer, predicted, 9, -100), label_ids=_ids(tokenizer, gold, 9, -100)
        )
    )
    assert whole == {"accuracy": pytest.approx(3 / 5)}

    def batch(first: int, stop: int, width: int) -> EvalPrediction:
        return EvalPrediction(
            predictions=torch.tensor(_ids(tokenizer, predicted[first:stop], width, -100)),
            label_ids=torch.tensor(_ids(tokenizer, gold[first:stop], width + 1, -100)),
        )

    for _ in range(2):  # two evaluations in a row
        assert compute(batch(0, 2, 9), compute_result=False) == {}
        assert compute(batch(2, 4, 7), compute_result=False) == {}
        assert compute(batch(4, 5, 8), compute_result=True) == whole
    with pytest.raises(ValueError, match="empty"):
        compute(EvalPrediction(predictions=[], label_ids=[]), compute_result=True)


def test_build_compute_metrics_rejects_unknown_task(tokenizer):
    with pytest.raises(ValueError, match="task='math'.*'text', 'equation'"):
        build_compute_metrics(tokenizer, task="math")


def test_compute_metrics_scores_rows_of_only_padding_as_wrong(tokenizer):
    """Rows of -100 decode to "" on both sides: an empty generation is not a match for an empty label."""
    from transformers import EvalPrediction

    padding = np.full((2, 3), -100)
    result = build_compute_metrics(tokenizer)(EvalPrediction(predictions=padding, label_ids=padding))
    assert result == {"accuracy": 0.0}


@pytest.mark.parametrize("empty", [[], np.zeros((0,), dtype=np.int64), np.zeros((0, 4), dtype=np.int64)])
def test_decode_token_ids_of_no_rows_is_no_texts(tokenizer, empty):
    from transformers import EvalPrediction

    from hf_cotmi.metrics import decode_token_ids

    assert decode_token_ids(tokenizer, empty) == []
    with pytest.raises(ValueError, match="accuracy of an empty list is undefined"):
        build_compute_metrics(tokenizer)(EvalPrediction(predictions=empty, label_ids=empty))


def _eos_test_tokenizer():
    from hf_cotmi.tiny import build_word_tokenizer

    return build_word_tokenizer(["beach bridge wooded area ."])


# (gold label, the student's teacher-forced argmax at its label's positions, target EOS included); rows 2 and
# 5 write "." where the label has its EOS, so only the label's length ends them
_TEACHER_FORCED_ROWS = [
    ("wooded area", ["wooded", "area", "</s>"]),
    ("beach", ["beach", "."]),
    ("bridge beach area", ["bridge", "beach", "wooded", "area"]),
    ("area", ["</s>", "beach"]),
    ("area", ["area", "."]),
]


def _reference_texts(tokenizer) -> list[str]:
    """Each row decoded on its own: its label's positions, up to the first EOS the student predicts there."""
    texts = []
    for _, predicted in _TEACHER_FORCED_ROWS:
        ids = tokenizer.convert_tokens_to_ids(predicted)
        if tokenizer.eos_token_id in ids:
            ids = ids[: ids.index(tokenizer.eos_token_id)]
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return texts


def _teacher_forced_batch(tokenizer, rows, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of ``rows`` (argmax: each row's tokens, then "bridge" over its batch's padding) and their labels
    (-100 after each label and its EOS), ``width`` positions wide."""
    logits = _one_hot_logits(tokenizer, [predicted for _, predicted in rows], width)
    labels = _ids(tokenizer, [gold for gold, _ in rows], width, -100)
    return logits, labels


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 5])
def test_logits_decode_at_their_label_positions_whatever_the_batch_size(batch_size):
    """A student whose argmax at its label's EOS is not EOS (``beach .`` for ``beach``) ran on into its batch's
    padding: alone 'beach .', in a batch 'beach . bridge', accuracy 1.0 at batch 1 and 0.5 at batch 2. Each row
    now reads its label's positions only, so every batch size gives the rows decoded one by one."""
    import torch
    from transformers import EvalPrediction

    from hf_cotmi.metrics import decode_token_ids

    tok = _eos_test_tokenizer()
    assert tok.eos_token == "</s>"
    reference = _reference_texts(tok)
    assert reference == ["wooded area", "beach .", "bridge beach wooded area", "", "area ."]
    golds = [gold for gold, _ in _TEACHER_FORCED_ROWS]
    expected = {"accuracy": text_accuracy(reference, golds)}
    assert expected == {"accuracy": pytest.approx(3 / 5)}
    batches = []
    for start in range(0, len(_TEACHER_FORCED_ROWS), batch_size):
        rows = _TEACHER_FORCED_ROWS[start : start + batch_size]
        width = (
            max(len(tok(gold)["input_ids"]) for gold, _ in rows) + start % 2
        )  # padded a column more or not
        batches.append(_teacher_forced_batch(tok, rows, width))
    per_batch_logits, per_batch_labels = [b[0] for b in batches], [b[1] for b in batches]
    compute = build_compute_metrics(tok)
    # eval_do_concat_batches=False: the per-batch arrays
    assert compute(EvalPrediction(predictions=per_batch_logits, label_ids=per_batch_labels)) == expected
    assert decode_token_ids(tok, per_batch_logits, label_ids=per_batch_labels) == reference
    # the Trainer's concatenation: every batch padded with -100 to the widest
    width = max(logits.shape[1] for logits in per_batch_logits)
    logits = np.concatenate(
        [np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0)), constant_values=-100) for x in per_batch_logits]
    )
    labels = np.concatenate(
        [np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=-100) for x in per_batch_labels]
    )
    assert compute(EvalPrediction(predictions=logits, label_ids=labels)) == expected
    assert decode_token_ids(tok, logits, label_ids=labels) == reference
    # batch_eval_metrics=True: one call per batch of tensors
    for i, (batch_logits, batch_labels) in enumerate(batches):
        last = i == len(batches) - 1
        result = compute(
            EvalPrediction(
                predictions=torch.from_numpy(batch_logits), label_ids=torch.from_numpy(batch_labels)
            ),
            compute_result=last,
        )
        assert result == (expected if last else {})


def test_logits_with_labels_that_cannot_be_aligned_are_cut_at_their_eos_with_a_warning(caplog):
    """Labels with a label beyond the logits' width (a flat decoder-only batch's labels cover its prompt) do not
    say which position predicts which label: each row is then cut at its first EOS alone, and a warning says
    so. Another number of rows is an error."""
    from hf_cotmi import metrics
    from hf_cotmi.metrics import decode_token_ids

    tok = _eos_test_tokenizer()
    logits, labels = _teacher_forced_batch(tok, _TEACHER_FORCED_ROWS[:2], 4)
    prompt = np.full((2, 3), -100)
    wide = np.concatenate([prompt, labels], axis=1)  # the labels after 3 prompt columns
    assert decode_token_ids(tok, logits, label_ids=labels) == ["wooded area", "beach ."]
    with mock.patch.object(metrics, "_warned_unaligned_labels", False), caplog.at_level("WARNING"):
        assert decode_token_ids(tok, logits, label_ids=wide) == ["wooded area", "beach . bridge bridge"]
    assert "not aligned with the logits" in caplog.text
    assert decode_token_ids(
        tok, logits, label_ids=np.pad(labels, ((0, 0), (0, 3)), constant_values=-100)
    ) == [
        "wooded area",
        "beach .",
    ]  # padding beyond the logits' width is no label
    with pytest.raises(ValueError, match="label_ids hold 1 rows but the logits 2"):
        decode_token_ids(tok, logits, label_ids=labels[:1])
    with pytest.raises(ValueError, match="label_ids hold 1 batches but the predictions 2"):
        decode_token_ids(tok, [logits[:1], logits[1:]], label_ids=[labels])


def _eos_test_records() -> list[dict[str, str]]:
    """Records whose labels differ in length, so an evaluation batch pads the shorter ones."""
    labels = ["3", "tom has 3 apples", "7 apples", "12", "how many apples ?", "5 + 4 = 9", "1"]
    return [
        {"input": f"tom has {i} apples . how many ?", "label": label, "rationale": f"tom has {i} ."}
        for i, label in enumerate(labels)
    ]


def _tiny_student(tokenizer, architecture: str):
    """An untrained tiny student in evaluation mode: it rarely predicts EOS where its label has it."""
    from hf_cotmi import build_tiny_causal_lm, build_tiny_seq2seq

    if architecture == "t5":
        model = build_tiny_seq2seq(tokenizer, "t5", seed=3)
    else:
        model = build_tiny_causal_lm(tokenizer, "llama", seed=3)
    return model.eval()


def _each_alone(model, tokenizer, batches, architecture: str) -> tuple[list[str], list[int], int]:
    """Each one-example batch's own forward pass, read without the package's decoding: the argmax at its label
    positions (a decoder-only student's: at the positions before them), up to the first EOS, decoded and
    stripped. Also the number of label positions of each, and how many have no EOS there (those would read
    their batch's padding)."""
    import torch

    texts, target_lengths, ran_on = [], [], 0
    for batch in batches:
        labels = batch["labels"][0]
        with torch.no_grad():
            if architecture == "t5":
                argmax = model(**batch).logits[0].argmax(-1)
                ids = [int(argmax[t]) for t in range(len(labels)) if labels[t] >= 0]
            else:
                inputs = {key: value for key, value in batch.items() if key != "labels"}
                argmax = model(**inputs).logits[0].argmax(-1)
                ids = [int(argmax[t - 1]) for t in range(1, len(labels)) if labels[t] >= 0]
        target_lengths.append(len(ids))
        ran_on += tokenizer.eos_token_id not in ids
        ids = ids[: ids.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in ids else ids
        texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return texts, target_lengths, ran_on


@pytest.mark.parametrize("architecture", ["t5", "llama"])
def test_predict_without_generation_scores_each_example_as_alone(tmp_path, tiny_tokenizer, architecture):
    """``predict()`` with ``predict_with_generate=False`` gives the label logits and the labels they are scored
    against (a decoder-only student's: its target window); decoded with those labels, and compared by
    ``build_compute_metrics``, each row is its example's own forward pass (argmax at its target positions, up
    to the first EOS) at every batch size. An untrained student rarely predicts EOS where its label has it."""
    from datasets import Dataset
    from transformers import EvalPrediction

    from hf_cotmi import DSSMITrainer, DSSMITrainingArguments, prepare_dss_features
    from hf_cotmi.metrics import decode_token_ids

    tok = tiny_tokenizer
    model = _tiny_student(tok, architecture)
    records = _eos_test_records()
    features = prepare_dss_features(Dataset.from_list(records), tok, model=model)
    trainer = DSSMITrainer(
        model=model,
        args=DSSMITrainingArguments(
            str(tmp_path), report_to="none", use_cpu=True, predict_with_generate=False
        ),
        processing_class=tok,
    )
    alone = [trainer.data_collator([features[index]])["pred"] for index in range(len(features))]
    reference, target_lengths, ran_on = _each_alone(model, tok, alone, architecture)
    assert ran_on > 0 and len(set(target_lengths)) > 2  # what the batches' padding could change
    golds = [record["label"] for record in records]
    expected = {"accuracy": text_accuracy(reference, golds)}
    seen: list[str] = []
    compute = build_compute_metrics(tok, prediction_parser=lambda text: seen.append(text) or text)
    without_labels = []
    for batch_size in (1, 2, 3, 7):
        trainer.args.per_device_eval_batch_size = batch_size
        output = trainer.predict(features)  # the label logits and the labels they are scored against
        seen.clear()
        assert compute(EvalPrediction(predictions=output.predictions, label_ids=output.label_ids)) == expected
        assert seen == reference, batch_size
        assert decode_token_ids(tok, output.predictions, label_ids=output.label_ids) == reference, batch_size
        rows = trainer.decode_predictions(output.predictions, label_ids=output.label_ids)
        assert [row["prediction"] for row in rows] == reference, batch_size
        assert all(row["rationale"] is None for row in rows)
        without_labels.append([row["prediction"] for row in trainer.decode_predictions(output.predictions)])
    # without the label ids a row read its batch's padding: what the label ids change
    assert any(texts != reference for texts in without_labels)


@pytest.mark.parametrize("architecture", ["t5", "llama"])
def test_flat_predictions_without_generation_come_with_labels_aligned_to_their_logits(
    tmp_path, tiny_tokenizer, architecture, caplog
):
    """A flat (label-task-only) batch, from ``DataCollatorForSeq2Seq``, with ``predict_with_generate=False``:
    ``predict()`` returns the label logits and, as for a DSS batch, the labels they are scored against, position
    by position (a decoder-only student's: its target window, not the full-width labels, which cover its prompt
    too and could not be aligned, so the metrics read each row up to its first EOS only, with a warning). The
    gold texts read from those labels are the features' own, the predictions each example's own forward pass,
    and their accuracy the same at every batch size. (A DSSMITrainer takes no ``compute_metrics`` without
    generation: they are computed on ``predict()``'s output.)"""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, EvalPrediction

    from hf_cotmi import DSSMITrainer, DSSMITrainingArguments, metrics, prepare_dss_features
    from hf_cotmi.metrics import decode_token_ids

    tok = tiny_tokenizer
    model = _tiny_student(tok, architecture)
    records = _eos_test_records()
    features = prepare_dss_features(Dataset.from_list(records), tok, model=model)
    features = features.select_columns(["input_ids", "attention_mask", "labels"])
    collator = DataCollatorForSeq2Seq(tok, model=model)
    trainer = DSSMITrainer(
        model=model,
        args=DSSMITrainingArguments(
            str(tmp_path), report_to="none", use_cpu=True, predict_with_generate=False
        ),
        processing_class=tok,
        data_collator=collator,
    )
    alone = [collator([features[index]]) for index in range(len(features))]
    assert all("pred" not in batch for batch in alone)
    reference, target_lengths, ran_on = _each_alone(model, tok, alone, architecture)
    assert ran_on > 0 and len(set(target_lengths)) > 2  # what the batches' padding could change
    # the gold texts of the features' own (full-width) labels
    golds = [
        tok.decode([t for t in row if t >= 0], skip_special_tokens=True).strip() for row in features["labels"]
    ]
    assert golds == [record["label"] for record in records]
    expected = text_accuracy(reference, golds)
    compute = build_compute_metrics(tok)
    with mock.patch.object(metrics, "_warned_unaligned_labels", False), caplog.at_level("WARNING"):
        for batch_size in (1, 2, 3, 7):
            trainer.args.per_device_eval_batch_size = batch_size
            output = trainer.predict(features)
            assert output.label_ids.shape == output.predictions.shape[:2], batch_size
            references = [text.strip() for text in decode_token_ids(tok, output.label_ids)]
            assert references == golds, batch_size
            rows = trainer.decode_predictions(output.predictions, label_ids=output.label_ids)
            assert [row["prediction"] for row in rows] == reference, batch_size
            assert compute(EvalPrediction(output.predictions, output.label_ids)) == {"accuracy": expected}
    assert "not aligned with the logits" not in caplog.text


def test_a_flat_causal_batch_labelled_from_its_first_token_returns_the_labels_its_logits_predict(
    tmp_path, tiny_tokenizer
):
    """A flat decoder-only batch whose labels are its input ids (a label in column 0, which no position
    predicts): ``predict()``'s label ids are its labels from column 1 on, what the logits predict and the loss
    scores (as the model's own shifted loss does), aligned with the logits."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    from hf_cotmi import DSSMITrainer, DSSMITrainingArguments

    tok = tiny_tokenizer
    model = _tiny_student(tok, "llama")
    features = []
    for text in ["tom has 3 apples", "how many ?", "7"]:
        ids = tok(text)["input_ids"]
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    collator = DataCollatorForSeq2Seq(tok, model=model)
    trainer = DSSMITrainer(
        model=model,
        args=DSSMITrainingArguments(
            str(tmp_path), report_to="none", use_cpu=True, predict_with_generate=False
        ),
        processing_class=tok,
        data_collator=collator,
    )
    batch = collator(features)
    assert batch["labels"][:, 0].ge(0).all() and batch["labels"][:, -1].ge(0).any()
    _, logits, labels = trainer.prediction_step(model, batch, prediction_loss_only=False)
    assert torch.equal(labels, batch["labels"][:, 1:])
    assert logits.shape[:2] == labels.shape
