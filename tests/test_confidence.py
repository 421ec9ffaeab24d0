"""Label confidence in the three modes, checked against one-example-at-a-time teacher-forced references."""

from __future__ import annotations

import copy

import datasets
import numpy as np
import pytest
import torch

from hf_cotmi import build_tiny_seq2seq, build_word_tokenizer, label_confidences

INPUTS = [
    "a man sleeps",
    "a cat runs",
    "two dogs bark",
    "kids play outside",
    "the sun is hot",
    "rain falls now",
]
LABELS = ["yes", "no", "not sure at all", "yes", "no", "not sure at all"]
CANDIDATES = ["yes", "no", "not sure at all"]


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(["predict: " + x for x in INPUTS] + LABELS + ["maybe"])


def fit(model, enc, labels, steps):
    """Fit a tiny seq2seq model to ``labels`` (-100 where ignored) with Adam, seeded."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        model(**enc, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()


def fitted_t5(tok, labels_text, steps):
    """A tiny T5 fitted to answer ``INPUTS`` with ``labels_text``."""
    model = build_tiny_seq2seq(tok, "t5", seed=0)
    enc = tok(["predict: " + x for x in INPUTS], padding=True, return_tensors="pt")
    labels = tok(text_target=labels_text, padding=True, return_tensors="pt")["input_ids"]
    labels[labels == tok.pad_token_id] = -100
    fit(model, enc, labels, steps=steps)
    return model


@pytest.fixture(scope="module")
def trained_t5(tok):
    """A tiny T5 fitted for a few steps, so that generations end with </s> at different lengths."""
    return fitted_t5(tok, LABELS, steps=40).eval()


def data():
    return {"input": list(INPUTS), "label": list(LABELS)}


def encode(tok, text):
    return tok(["predict: " + text], return_tensors="pt")


def ref_log_likelihood(model, tok, text, target_ids):
    """log p(target | text), one example, full forward pass (encoder included), no reuse."""
    labels = torch.tensor([target_ids])
    with torch.no_grad():
        logits = model(**encode(tok, text), labels=labels).logits
    return torch.log_softmax(logits.double(), -1)[0, torch.arange(len(target_ids)), labels[0]].sum().item()


def ref_candidate_probs(model, tok, text, candidates):
    scores = np.array(
        [ref_log_likelihood(model, tok, text, tok(text_target=c)["input_ids"]) for c in candidates]
    )
    scores = np.exp(scores - scores.max())
    return scores / scores.sum()


@pytest.mark.parametrize("arch", ["t5", "bart", "encoder-decoder"])
def test_candidates_mode_matches_reference(tok, arch):
    model = build_tiny_seq2seq(tok, arch, seed=3)
    result = label_confidences(model, tok, data(), label_candidates=CANDIDATES, batch_size=4)
    assert result.mode == "candidates"
    for i, text in enumerate(INPUTS):
        expected = ref_candidate_probs(model, tok, text, CANDIDATES)
        np.testing.assert_allclose(result.candidate_probabilities[i], expected, atol=1e-5)
        assert result.confidences[i] == pytest.approx(expected.max(), abs=1e-5)
        assert result.predictions[i] == CANDIDATES[int(expected.argmax())]
        assert result.correct[i] == (result.predictions[i] == LABELS[i])


def test_per_example_candidates_from_column(tok, trained_t5):
    choices = [
        ["no", "yes"],
        ["yes", "maybe", "no", "not sure at all"],
        ["not sure at all", "yes", "no"],
        ["maybe", "yes"],
        ["no", "maybe", "no"],  # duplicate dropped
        ["yes", "not sure at all"],
    ]
    ds = datasets.Dataset.from_dict({**data(), "choices": choices})
    # batch_size=3 makes candidate chunks straddle examples
    result = label_confidences(trained_t5, tok, ds, label_candidates="choices", batch_size=3)
    for i, text in enumerate(INPUTS):
        cands = list(dict.fromkeys(choices[i]))
        expected = ref_candidate_probs(trained_t5, tok, text, cands)
        np.testing.assert_allclose(result.candidate_probabilities[i], expected, atol=1e-5)
        assert result.predictions[i] == cands[int(expected.argmax())]
    # the fitted model prefers the gold label wherever the gold label is a candidate
    assert result.correct.tolist() == [LABELS[i] in choices[i] for i in range(6)]


def reference_generation(model, tok, text, num_beams, max_new_tokens=6):
    with torch.no_grad():
        seq = model.generate(
            **encode(tok, text), num_beams=num_beams, do_sample=False, max_new_tokens=max_new_tokens
        )[0, 1:].tolist()
    if tok.eos_token_id in seq:
        seq = seq[: seq.index(tok.eos_token_id) + 1]
    return seq


@pytest.mark.parametrize("num_beams", [1, 3])
def test_sequence_mode_is_probability_of_generated_sequence(tok, trained_t5, num_beams):
    result = label_confidences(
        trained_t5, tok, data(), mode="sequence", batch_size=4, max_new_tokens=6, num_beams=num_beams
    )
    lengths = set()
    for i, text in enumerate(INPUTS):
        seq = reference_generation(trained_t5, tok, text, num_beams)
        lengths.add(len(seq))
        assert result.predictions[i] == tok.decode(seq, skip_special_tokens=True)
        expected = np.exp(ref_log_likelihood(trained_t5, tok, text, seq))
        assert result.confidences[i] == pytest.approx(expected, abs=1e-5)
    assert len(lengths) > 1, "the test needs generations of different lengths (padding after </s>)"
    assert result.correct.all()


def test_sequence_mode_untrained_encoder_decoder(tok):
    # a BERT-to-BERT model: no </s> within the limit, so every generated token counts
    model = build_tiny_seq2seq(tok, "encoder-decoder", seed=1)
    result = label_confidences(model, tok, data(), batch_size=4, max_new_tokens=3)
    assert result.mode == "sequence"
    for i, text in enumerate(INPUTS):
        seq = reference_generation(model, tok, text, 1, max_new_tokens=3)
        expected = np.exp(ref_log_likelihood(model, tok, text, seq))
        assert result.confidences[i] == pytest.approx(expected, rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_first_token_mode(tok, trained_t5, arch):
    model = trained_t5 if arch == "t5" else build_tiny_seq2seq(tok, "bart", seed=2)
    result = label_confidences(model, tok, data(), mode="first_token", batch_size=4, max_new_tokens=6)
    start = model.config.decoder_start_token_id
    for i, text in enumerate(INPUTS):
        with torch.no_grad():
            logits = model(**encode(tok, text), decoder_input_ids=torch.tensor([[start]])).logits[0, 0]
        assert result.confidences[i] == pytest.approx(torch.softmax(logits, -1).max().item(), abs=1e-5)
    if arch == "t5":
        assert result.predictions == LABELS


@pytest.mark.parametrize(("mode", "num_beams"), [("candidates", 1), ("sequence", 2), ("first_token", 1)])
def test_encoder_runs_once_per_example(tok, trained_t5, mode, num_beams):
    rows = []

    def count(module, args, kwargs, output):
        rows.append(kwargs["input_ids"].shape[0])

    handle = trained_t5.get_encoder().register_forward_hook(count, with_kwargs=True)
    try:
        label_confidences(
            trained_t5,
            tok,
            data(),
            mode=mode,
            label_candidates=CANDIDATES if mode == "candidates" else None,
            batch_size=4,
            num_beams=num_beams,
            max_new_tokens=4,
        )
    finally:
        handle.remove()
    assert rows == [4, 2]


def test_dataset_forms_agree_and_gold_from_label_ids(tok, trained_t5):
    enc = tok(["predict: " + x for x in INPUTS])
    tokenised = datasets.Dataset.from_dict(
        {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": tok(text_target=LABELS)["input_ids"],
            "input": INPUTS,
            "label": LABELS,
        }
    )
    from_text = label_confidences(trained_t5, tok, data(), label_candidates=CANDIDATES, batch_size=4)
    from_ids = label_confidences(trained_t5, tok, tokenised, label_candidates=CANDIDATES, batch_size=5)
    rows = [{"input": x, "label": y} for x, y in zip(INPUTS, LABELS)]
    from_rows = label_confidences(trained_t5, tok, rows, label_candidates=CANDIDATES, batch_size=2)
    np.testing.assert_allclose(from_ids.confidences, from_text.confidences, atol=1e-5)
    np.testing.assert_allclose(from_rows.confidences, from_text.confidences, atol=1e-5)
    # no text label column: the gold label is decoded from `labels` (with -100 padding dropped)
    padded = [ids + [-100] * 2 for ids in tok(text_target=LABELS)["input_ids"]]
    ids_only = tokenised.remove_columns(["label", "input", "labels"]).add_column("labels", padded)
    result = label_confidences(trained_t5, tok, ids_only, label_candidates=CANDIDATES)
    assert result.references == LABELS
    assert result.correct.all()


def test_custom_is_correct_and_normalised_match(tok, trained_t5):
    shouting = {"input": list(INPUTS), "label": [f"  {x.upper()}. " for x in LABELS]}
    result = label_confidences(trained_t5, tok, shouting, max_new_tokens=6)
    assert result.correct.all()  # case, whitespace and a trailing period are normalised away
    never = label_confidences(trained_t5, tok, shouting, max_new_tokens=6, is_correct=lambda p, g: False)
    assert not never.correct.any()
    np.testing.assert_allclose(never.confidences, result.confidences)
    assert 0.0 <= result.ece() <= 1.0 and result.accuracy == 1.0


def test_errors_name_the_argument(tok, trained_t5):
    with pytest.raises(ValueError, match="`mode` must be one of"):
        label_confidences(trained_t5, tok, data(), mode="tokens")
    with pytest.raises(ValueError, match="needs `label_candidates`"):
        label_confidences(trained_t5, tok, data(), mode="candidates")
    for mode in ("sequence", "first_token"):  # candidates a generation mode would ignore
        with pytest.raises(ValueError, match=f"used only by `mode='candidates'`; `mode='{mode}'`"):
            label_confidences(trained_t5, tok, data(), mode=mode, label_candidates=["yes", "no"])
    with pytest.raises(ValueError, match="names a column that `dataset` lacks"):
        label_confidences(trained_t5, tok, data(), label_candidates="choices")
    with pytest.raises(ValueError, match="`input_column='input'`"):
        label_confidences(trained_t5, tok, {"text": INPUTS, "label": LABELS})
    with pytest.raises(ValueError, match="`label_column='label'`"):
        label_confidences(trained_t5, tok, {"input": INPUTS})
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        label_confidences(trained_t5, tok, data(), batch_size=0)
    with pytest.raises(ValueError, match="example 1 must be a non-empty list"):
        label_confidences(
            trained_t5,
            tok,
            {**data(), "choices": [["yes"], [], ["no"], ["no"], ["no"], ["no"]]},
            label_candidates="choices",
        )


def test_concatenate_joins_parts_in_order_and_checks_modes() -> None:
    from hf_cotmi.confidence import LabelConfidences

    first = LabelConfidences(
        "candidates", ["a"], ["a"], np.array([0.9]), np.array([True]), [np.array([0.9, 0.1])]
    )
    empty = LabelConfidences("candidates", [], [], np.zeros(0), np.zeros(0, dtype=bool), [])
    second = LabelConfidences(
        "candidates",
        ["b", "a"],
        ["a", "a"],
        np.array([0.6, 0.7]),
        np.array([False, True]),
        [np.array([0.4, 0.6])] * 2,
    )
    joined = LabelConfidences.concatenate([first, empty, second])
    assert joined.predictions == ["a", "b", "a"] and joined.references == ["a", "a", "a"]
    assert joined.confidences.tolist() == [0.9, 0.6, 0.7]
    assert joined.correct.dtype == bool and joined.correct.tolist() == [True, False, True]
    assert len(joined.candidate_probabilities) == 3
    sequence = LabelConfidences("sequence", ["a"], ["a"], np.array([0.5]), np.array([True]))
    assert LabelConfidences.concatenate([sequence]).candidate_probabilities is None
    with pytest.raises(ValueError, match="different confidence modes"):
        LabelConfidences.concatenate([first, sequence])
    with pytest.raises(ValueError, match="at least one"):
        LabelConfidences.concatenate([])


def test_row_range_slices_every_dataset_kind() -> None:
    from datasets import Dataset

    from hf_cotmi.dataset_rows import row_range

    columns = {"input": ["x0", "x1", "x2", "x3"], "label": ["0", "1", "2", "3"]}
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    assert row_range(columns, 1, 3) == {"input": ["x1", "x2"], "label": ["1", "2"]}
    assert row_range(rows, 1, 3) == rows[1:3]
    assert row_range(Dataset.from_dict(columns), 1, 3)["label"] == ["1", "2"]


def test_sized_rows_reads_iterable_sets_in_order_and_keeps_sized_ones() -> None:
    """The one reader of an iterable evaluation set, for the ECE callback and for the trainer on several
    processes: a datasets.IterableDataset becomes a datasets.Dataset with its features, any torch iterable set
    (with a length too: it has no rows to index) a list of its rows, in order."""
    import torch
    from datasets import ClassLabel, Dataset, Features, Value

    from hf_cotmi.dataset_rows import sized_rows

    features = Features({"input": Value("string"), "label": ClassLabel(names=["no", "yes"])})
    table = Dataset.from_dict({"input": ["x0", "x1", "x2", "x3"], "label": [1, 0, 0, 1]}, features=features)
    assert sized_rows(table) is table
    read = sized_rows(table.to_iterable_dataset(num_shards=2))
    assert isinstance(read, Dataset) and read.features == features and read.to_list() == table.to_list()
    renamed = sized_rows(table.to_iterable_dataset().rename_column("label", "gold"))
    assert renamed.column_names == ["input", "gold"] and renamed["gold"] == [1, 0, 0, 1]

    class SizedRows(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(table.to_list())

        def __len__(self):
            return 4

    assert sized_rows(SizedRows()) == table.to_list()
    with pytest.raises(TypeError, match="neither a length nor rows to iterate"):
        sized_rows(7)


@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_candidates_that_tokenise_alike_are_one_candidate(tok, arch):
    """ " yes" and "Yes" are the tokens of "yes" to this tokenizer: one sequence, not three in the softmax."""
    alike = [" yes", "Yes"]
    assert all(tok(text_target=c)["input_ids"] == tok(text_target="yes")["input_ids"] for c in alike)
    model = build_tiny_seq2seq(tok, arch, seed=3)
    choices = [["yes", "no"] + alike, ["no", *alike, "yes"]] * 3
    ds = {**data(), "choices": choices}
    result = label_confidences(model, tok, ds, label_candidates="choices", batch_size=4)
    fixed = label_confidences(model, tok, data(), label_candidates=["yes", "no", *alike], batch_size=4)
    for i, text in enumerate(INPUTS):
        # the reference scores each distinct sequence once, one example and one candidate at a time
        distinct = ["yes", "no"] if i % 2 == 0 else ["no", " yes"]
        expected = ref_candidate_probs(model, tok, text, distinct)
        np.testing.assert_allclose(result.candidate_probabilities[i], expected, atol=1e-5)
        assert result.confidences[i] == pytest.approx(expected.max(), abs=1e-5)
        assert result.predictions[i] == distinct[int(expected.argmax())]
        assert fixed.confidences[i] == pytest.approx(
            max(ref_candidate_probs(model, tok, text, ["yes", "no"]))
        )


# ---------------------------------------------------------------------------------------------------------
# tokens forced by a logits processor: mBART/NLLB's `forced_bos_token_id` (the first generated token),
# BART's `forced_eos_token_id` (the last one, at the length limit)


def with_forced_first_token(model, tok):
    """A copy of ``model`` whose generation config forces "maybe" as the first generated token."""
    forced = copy.deepcopy(model)
    forced.generation_config.forced_bos_token_id = tok.convert_tokens_to_ids("maybe")
    return forced


def token_log_probs(model, tok, text, decoder_ids):
    """log-softmax of the decoder at every position of ``decoder_ids``: one example, full forward pass."""
    with torch.no_grad():
        logits = model(**encode(tok, text), decoder_input_ids=torch.tensor([decoder_ids])).logits[0]
    return torch.log_softmax(logits.double(), -1)


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_first_token_confidence_is_read_after_a_forced_first_token(tok, trained_t5, arch, num_beams):
    base = trained_t5 if arch == "t5" else build_tiny_seq2seq(tok, "bart", seed=2)
    model = with_forced_first_token(base, tok)
    result = label_confidences(
        model, tok, data(), mode="first_token", batch_size=4, max_new_tokens=6, num_beams=num_beams
    )
    prefix = [model.config.decoder_start_token_id, model.generation_config.forced_bos_token_id]
    for i, text in enumerate(INPUTS):
        assert result.predictions[i].split()[0] == "maybe"  # the forced token was generated first
        # the model's own choice starts after the forced token: its top probability there
        expected = token_log_probs(model, tok, text, prefix)[-1].exp().max().item()
        assert result.confidences[i] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("arch", "force_first_token"),
    [("bart", False), ("t5", True)],  # BART forces </s> at the length limit; T5 gets a forced first token
)
def test_first_token_confidence_refuses_a_generation_whose_only_step_is_forced(tok, arch, force_first_token):
    model = build_tiny_seq2seq(tok, arch, seed=2)
    if force_first_token:
        model = with_forced_first_token(model, tok)
    setting = "forced_bos_token_id=" if force_first_token else "forced_eos_token_id="
    with pytest.raises(
        ValueError, match=rf"example 0\b.*forced by a logits processor.*{setting}.*max_new_tokens"
    ):
        label_confidences(model, tok, data(), mode="first_token", max_new_tokens=1)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_sequence_confidence_takes_a_forced_first_token_as_given(tok, trained_t5, num_beams):
    """A forced token is not the model's choice: it counts with probability 1 (its processed log-prob is 0)."""
    model = with_forced_first_token(trained_t5, tok)
    result = label_confidences(
        model, tok, data(), mode="sequence", batch_size=4, max_new_tokens=6, num_beams=num_beams
    )
    start, forced = model.config.decoder_start_token_id, model.generation_config.forced_bos_token_id
    for i, text in enumerate(INPUTS):
        generated = reference_generation(model, tok, text, num_beams)
        assert generated[0] == forced and generated[-1] == tok.eos_token_id
        log_probs = token_log_probs(model, tok, text, [start] + generated[:-1])
        chosen = sum(log_probs[t, generated[t]].item() for t in range(1, len(generated)))
        assert result.predictions[i] == tok.decode(generated, skip_special_tokens=True)
        assert result.confidences[i] == pytest.approx(np.exp(chosen), abs=1e-5)


# ---------------------------------------------------------------------------------------------------------
# where a generated label ends: EOS, the length limit, or no EOS at all


@pytest.mark.parametrize("num_beams", [1, 3])
def test_sequence_confidence_of_rows_cut_by_the_limit_beside_rows_that_ended(tok, trained_t5, num_beams):
    # "not sure at all </s>" needs 5 tokens: with 3 it is cut, while "yes </s>" ends and is padded
    result = label_confidences(
        trained_t5, tok, data(), mode="sequence", batch_size=6, max_new_tokens=3, num_beams=num_beams
    )
    ended = cut = 0
    for i, text in enumerate(INPUTS):
        seq = reference_generation(trained_t5, tok, text, num_beams, max_new_tokens=3)
        ended += seq[-1] == tok.eos_token_id and len(seq) < 3
        cut += tok.eos_token_id not in seq and len(seq) == 3
        assert result.predictions[i] == tok.decode(seq, skip_special_tokens=True)
        assert result.confidences[i] == pytest.approx(np.exp(ref_log_likelihood(trained_t5, tok, text, seq)))
    assert ended and cut, "the batch needs both rows that ended (padded) and rows cut by the limit"


def test_sequence_confidence_without_any_eos_counts_every_generated_token(tok, trained_t5):
    """No EOS in the generation config, the model config or the tokenizer: nothing ends a row early."""
    model = copy.deepcopy(trained_t5)
    model.generation_config.eos_token_id = None
    model.config.eos_token_id = None
    no_eos_tok = copy.deepcopy(tok)
    no_eos_tok.eos_token = None
    assert no_eos_tok.eos_token_id is None
    result = label_confidences(model, no_eos_tok, data(), mode="sequence", batch_size=4, max_new_tokens=6)
    for i, text in enumerate(INPUTS):
        seq = reference_generation(model, no_eos_tok, text, 1)
        assert len(seq) == 6 and tok.eos_token_id in seq[:-1]  # "</s>" is generated, and ends nothing
        assert result.predictions[i] == LABELS[i]  # special tokens are still dropped from the text
        expected = np.exp(ref_log_likelihood(model, tok, text, seq))
        assert result.confidences[i] == pytest.approx(expected, rel=1e-4)


@pytest.fixture(scope="module")
def t5_talking_past_eos(tok):
    """A tiny T5 fitted to go on after </s> ("yes </s> maybe maybe"), whose generation config names no EOS."""
    model = build_tiny_seq2seq(tok, "t5", seed=0)
    enc = tok(["predict: " + x for x in INPUTS], padding=True, return_tensors="pt")
    maybe = tok.convert_tokens_to_ids("maybe")
    targets = [ids + [maybe, maybe] for ids in tok(text_target=LABELS)["input_ids"]]
    labels = torch.full((len(targets), max(map(len, targets))), -100)
    for row, ids in enumerate(targets):
        labels[row, : len(ids)] = torch.tensor(ids)
    fit(model, enc, labels, steps=60)
    model.generation_config.eos_token_id = None  # the model config and the tokenizer still name </s>
    return model.eval()


def test_a_generation_config_without_eos_stops_where_the_confidence_ends(tok, t5_talking_past_eos):
    model = t5_talking_past_eos
    with torch.no_grad():
        unstopped = model.generate(**encode(tok, INPUTS[0]), do_sample=False, max_new_tokens=8)[0]
    assert tok.decode(unstopped, skip_special_tokens=True).startswith("yes maybe")  # generate alone goes on
    result = label_confidences(model, tok, data(), mode="sequence", batch_size=4, max_new_tokens=8)
    # the label ends at </s>, the end the confidence is measured to: the text after it is not the label
    assert result.predictions == LABELS
    for i, text in enumerate(INPUTS):
        expected = np.exp(ref_log_likelihood(model, tok, text, tok(text_target=LABELS[i])["input_ids"]))
        assert result.confidences[i] == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------------------------------------------------
# logits processors that only choose the tokens (a repetition penalty, banned n-grams, suppressed tokens):
# the confidence is still the model's own probability of the tokens chosen, as a teacher-forced pass gives it

REPEATING_LABELS = ["yes yes", "no no", "not sure not sure", "yes yes", "no no", "not sure not sure"]


@pytest.fixture(scope="module")
def t5_repeating(tok):
    """A tiny T5 fitted to labels that repeat a token, generating under ``repetition_penalty=5.0``."""
    model = fitted_t5(tok, REPEATING_LABELS, steps=100)
    model.generation_config.repetition_penalty = 5.0
    return model.eval()


def processed_sequence_probability(model, tok, text, num_beams, max_new_tokens=6):
    """The probability of the generated tokens from generation's processed scores (what ECE must not use)."""
    with torch.no_grad():
        out = model.generate(
            **encode(tok, text),
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            output_scores=True,
            return_dict_in_generate=True,
        )
    beams = out.beam_indices if num_beams > 1 else None
    steps = model.compute_transition_scores(out.sequences, out.scores, beams, normalize_logits=beams is None)[
        0
    ]
    generated = out.sequences[0, -steps.shape[0] :].tolist()
    end = generated.index(tok.eos_token_id) + 1 if tok.eos_token_id in generated else len(generated)
    return float(np.exp(steps[:end].double().sum().item()))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_sequence_confidence_is_the_models_probability_under_a_repetition_penalty(
    tok, t5_repeating, num_beams
):
    model = t5_repeating
    result = label_confidences(
        model, tok, data(), mode="sequence", batch_size=4, max_new_tokens=6, num_beams=num_beams
    )
    repeats = not_greedy = 0
    for i, text in enumerate(INPUTS):
        seq = reference_generation(model, tok, text, num_beams)  # chosen under the penalty
        repeats += len(set(seq)) < len(seq)
        not_greedy += seq != reference_generation(model, tok, text, 1)
        assert result.predictions[i] == tok.decode(seq, skip_special_tokens=True)
        expected = np.exp(ref_log_likelihood(model, tok, text, seq))  # the model's own probability
        assert processed_sequence_probability(model, tok, text, num_beams) != pytest.approx(
            expected, rel=0.05
        )
        assert result.confidences[i] == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert repeats, "the test needs a generated label that repeats a token (the penalty then bites)"
    assert not_greedy or num_beams == 1, "with beams, some returned sequence should not be the greedy one"


@pytest.mark.parametrize("num_beams", [1, 3])
def test_first_token_confidence_is_the_models_probability_under_a_repetition_penalty(
    tok, t5_repeating, num_beams
):
    # a forced first token: the first step the model chooses follows it, and the penalty lowers "maybe" there
    model = with_forced_first_token(t5_repeating, tok)
    result = label_confidences(
        model, tok, data(), mode="first_token", batch_size=4, max_new_tokens=6, num_beams=num_beams
    )
    prefix = [model.config.decoder_start_token_id, model.generation_config.forced_bos_token_id]
    for i, text in enumerate(INPUTS):
        expected = token_log_probs(model, tok, text, prefix)[-1].exp().max().item()
        assert result.confidences[i] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_sequence_confidence_of_a_bart_large_like_generation_config(tok, num_beams):
    """facebook/bart-large's processors: a forced first token, </s> forced at the limit, no repeated 3-gram,
    plus suppressed tokens. Forced steps count as given; every other token at the model's probability."""
    model = with_forced_first_token(build_tiny_seq2seq(tok, "bart", seed=2), tok)
    model.generation_config.no_repeat_ngram_size = 3
    model.generation_config.suppress_tokens = tok.convert_tokens_to_ids(["yes", "no", "not"])
    model.generation_config.repetition_penalty = 3.0
    limit = 5
    result = label_confidences(
        model, tok, data(), mode="sequence", batch_size=4, max_new_tokens=limit, num_beams=num_beams
    )
    start = model.config.decoder_start_token_id
    for i, text in enumerate(INPUTS):
        generated = reference_generation(model, tok, text, num_beams, max_new_tokens=limit)
        forced = {0} | ({limit - 1} if len(generated) == limit else set())  # BOS; </s> at the limit
        assert generated[-1] == tok.eos_token_id
        log_probs = token_log_probs(model, tok, text, [start] + generated[:-1])
        chosen = sum(log_probs[t, token].item() for t, token in enumerate(generated) if t not in forced)
        assert result.predictions[i] == tok.decode(generated, skip_special_tokens=True)
        assert result.confidences[i] == pytest.approx(np.exp(chosen), rel=1e-4, abs=1e-9)


def test_generation_confidences_refuse_an_output_without_raw_logits(tok, trained_t5):
    from hf_cotmi.confidence import _generation_confidences

    with torch.no_grad():
        out = trained_t5.generate(
            **encode(tok, INPUTS[0]), max_new_tokens=3, output_scores=True, return_dict_in_generate=True
        )
    assert out.logits is None
    with pytest.raises(ValueError, match=r"output_logits=True"):
        _generation_confidences(trained_t5, out, "sequence", 1, {tok.eos_token_id}, torch)


def test_predict_texts_refuses_candidates_beside_a_generation_mode(tok, trained_t5):
    from hf_cotmi.generation import predict_texts

    with pytest.raises(ValueError, match="used only by `mode='candidates'`; `mode='first_token'`"):
        predict_texts(trained_t5, tok, INPUTS[:2], confidence="first_token", label_candidates=CANDIDATES)
    # candidates alone mean candidates mode: every label is one of them
    rows = predict_texts(trained_t5, tok, INPUTS[:2], label_candidates=CANDIDATES, rationale_max_new_tokens=2)
    assert [row["label"] in CANDIDATES for row in rows] == [True, True]


@pytest.mark.parametrize(
    ("prediction", "gold"), [("Neutral.", "neutral"), ("yes", "no"), ("", ""), (" ", "."), ("sea", "")]
)
def test_the_default_correctness_is_the_text_accuracys(prediction, gold):
    """ECE and accuracy must agree on "correct": without ``is_correct`` an example is right exactly when the
    text accuracy counts it right (an empty gold never is)."""
    from hf_cotmi.confidence import _default_is_correct
    from hf_cotmi.metrics import text_accuracy

    assert _default_is_correct(prediction, gold) == (text_accuracy([prediction], [gold]) == 1.0)
    assert _default_is_correct("", "") is False
