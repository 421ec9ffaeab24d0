"""Label confidence of decoder-only students (tiny Llama, Qwen2, GPT-2), against one-row-at-a-time references."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import fit_causal_on_labels
from datasets import Dataset

from hf_cotmi import (
    DSSMITrainer,
    ECECallback,
    build_tiny_causal_lm,
    build_word_tokenizer,
    evaluate_calibration,
    label_confidences,
    prepare_dss_features,
)
from hf_cotmi.causal_confidence import candidate_target_ids, causal_prompts, score_candidates
from hf_cotmi.data.causal import encode_causal_task
from hf_cotmi.pipeline import generate_texts, predict_texts
from hf_cotmi.prefixes import EXPLAIN_PREFIX, PREDICT_PREFIX

ARCHITECTURES = ["llama", "qwen2", "gpt2"]
INPUTS = [
    "a man sleeps",
    "a cat runs",
    "two dogs bark at the sun",
    "kids play outside",
    "the sun is hot",
    "rain falls now",
]
LABELS = ["yes", "no", "not sure at all", "yes", "no", "not sure at all"]
RATIONALES = ["he rests", "it moves", "dogs bark", "kids play", "hot sun", "rain now"]
CANDIDATES = ["yes", "no", "not sure at all"]


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer([PREDICT_PREFIX + x for x in INPUTS] + LABELS + RATIONALES + ["maybe"])


def data():
    return {"input": list(INPUTS), "label": list(LABELS)}


def fitted(tok, architecture, steps=40):
    """A tiny decoder fitted for a few steps on the label task, so that generations end at EOS."""
    model = build_tiny_causal_lm(tok, architecture, seed=1)
    return fit_causal_on_labels(model, tok, INPUTS, LABELS, steps=steps, max_target_length=16)


@pytest.fixture(scope="module")
def trained(tok):
    return {arch: fitted(tok, arch) for arch in ARCHITECTURES}


def naive_log_likelihood(model, tok, text, target):
    """log p(target + EOS | prompt): one unpadded sequence, one full forward pass, summed by hand."""
    enc = encode_causal_task(
        tok, [PREDICT_PREFIX + text], [target], max_prompt_length=999, max_target_length=99
    )
    ids, labels = enc.input_ids[0], enc.labels[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    log_probs = torch.log_softmax(logits, -1)
    return sum(log_probs[t - 1, labels[t]].item() for t in range(1, len(ids)) if labels[t] != -100)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_candidate_scores_equal_a_naive_full_pass_per_candidate(tok, trained, architecture):
    model = trained[architecture]
    result = label_confidences(model, tok, data(), label_candidates=CANDIDATES, batch_size=4)
    assert result.mode == "candidates"
    for i, text in enumerate(INPUTS):
        reference = np.array([naive_log_likelihood(model, tok, text, c) for c in CANDIDATES])
        expected = np.exp(reference - reference.max())
        expected /= expected.sum()
        np.testing.assert_allclose(result.candidate_probabilities[i], expected, atol=1e-5)
        assert result.predictions[i] == CANDIDATES[int(np.argmax(expected))]
        assert result.confidences[i] == pytest.approx(expected.max(), abs=1e-5)
    probabilities = np.stack(result.candidate_probabilities)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert result.accuracy > 0.5  # fitted: the scores are not uniform noise


@pytest.mark.parametrize("strategy", ["cache", "full"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_both_scoring_strategies_give_the_naive_log_likelihoods(tok, trained, architecture, strategy):
    model = trained[architecture]
    prompts = causal_prompts(tok, [PREDICT_PREFIX + x for x in INPUTS])
    per_example = [CANDIDATES if i % 2 else CANDIDATES[::-1] + ["maybe"] for i in range(len(INPUTS))]
    targets = [candidate_target_ids(tok, PREDICT_PREFIX + x, c) for x, c in zip(INPUTS, per_example)]
    with torch.no_grad():
        scores = score_candidates(
            model, prompts, targets, pad_id=tok.pad_token_id, batch_size=3, strategy=strategy
        )
    for text, cands, got in zip(INPUTS, per_example, scores):
        reference = [naive_log_likelihood(model, tok, text, c) for c in cands]
        np.testing.assert_allclose(got, reference, atol=1e-4)
    if strategy == "full":  # the output projection sees only the positions that predict a candidate token
        seen = []
        hook = model.get_output_embeddings().register_forward_hook(
            lambda module, args, out: seen.append(args[0].shape[1])
        )
        try:
            with torch.no_grad():
                score_candidates(
                    model,
                    prompts[:1],
                    [targets[0][:1]],
                    pad_id=tok.pad_token_id,
                    batch_size=1,
                    strategy="full",
                )
        finally:
            hook.remove()
        assert seen == [len(targets[0][0])]
    # an empty candidate is EOS alone: a single token, scored from the prompt's last position only
    eos_only = [candidate_target_ids(tok, PREDICT_PREFIX + x, [""]) for x in INPUTS[:2]]
    assert eos_only[0] == [[tok.eos_token_id]]
    with torch.no_grad():
        scores = score_candidates(
            model, prompts[:2], eos_only, pad_id=tok.pad_token_id, batch_size=3, strategy=strategy
        )
    for text, got in zip(INPUTS[:2], scores):
        np.testing.assert_allclose(got, [naive_log_likelihood(model, tok, text, "")], atol=1e-4)
    # called with gradients on (outside no_grad), more candidate rows than batch_size: same scores
    again = score_candidates(
        model, prompts, targets, pad_id=tok.pad_token_id, batch_size=3, strategy=strategy
    )
    for got, want in zip(
        again, score_candidates(model, prompts, targets, pad_id=tok.pad_token_id, batch_size=8)
    ):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_features_without_their_labels_are_refused_rather_than_prompted_with_the_answer(tok, trained):
    """Causal training rows end with target + EOS; dropping 'labels' would make all of that the prompt."""
    from hf_cotmi import DSSDataCollator

    model = trained["llama"]
    columns = {"input": INPUTS, "label": LABELS, "rationale": RATIONALES}
    features = prepare_dss_features(Dataset.from_dict(columns), tok, model=model, with_rationale=False)
    stripped = features.remove_columns(["labels"])
    with pytest.raises(ValueError, match="row 0 has no 'labels' and ends with the end-of-sequence token"):
        label_confidences(model, tok, stripped, label_candidates=CANDIDATES)
    with pytest.raises(ValueError, match="whose 'labels' column was removed"):
        DSSDataCollator(tok, model=model)([{"input_ids": row["input_ids"]} for row in stripped])
    # prompts alone (no target, no EOS) are still fine without labels
    prompts = [{"input_ids": ids} for ids in causal_prompts(tok, [PREDICT_PREFIX + x for x in INPUTS])]
    assert DSSDataCollator(tok, model=model)(prompts)["pred"]["input_ids"].shape[0] == len(INPUTS)


def test_features_whose_prompt_is_empty_are_refused_naming_the_example(tok, trained):
    """A hand-built (or old) feature row whose first id is already a target has no prompt to score from."""
    model = trained["llama"]
    columns = {"input": INPUTS, "label": LABELS, "rationale": RATIONALES}
    features = prepare_dss_features(Dataset.from_dict(columns), tok, model=model, with_rationale=False)
    rows = features.to_list()
    rows[3]["labels"] = list(rows[3]["input_ids"])  # every id a target: no prompt left
    broken = Dataset.from_list(rows)
    with pytest.raises(ValueError, match="example 3: its prompt has no ids"):
        label_confidences(model, tok, broken, label_candidates=CANDIDATES, batch_size=2)
    with pytest.raises(ValueError, match="example 3: its prompt has no ids"):
        label_confidences(model, tok, broken, batch_size=2)  # sequence confidence: generation


def test_the_prompt_runs_once_per_batch_with_the_cache(tok, trained):
    model = trained["llama"]
    seen: list[int] = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(int(kwargs["input_ids"].numel())), with_kwargs=True
    )
    try:
        label_confidences(model, tok, data(), label_candidates=CANDIDATES, batch_size=len(INPUTS))
    finally:
        hook.remove()
    prompts = causal_prompts(tok, [PREDICT_PREFIX + x for x in INPUTS])
    prompt_tokens = len(prompts) * max(len(p) for p in prompts)  # one left-padded prompt pass
    # the candidate rows carry their own tokens only (all but the final EOS), never the prompt again
    assert seen[0] == prompt_tokens
    assert sum(seen[1:]) < len(CANDIDATES) * len(INPUTS) * 5
    assert sum(seen) < len(CANDIDATES) * prompt_tokens


def test_features_and_raw_text_give_the_same_confidences(tok, trained):
    model = trained["qwen2"]
    records = [{"input": x, "label": y, "rationale": r} for x, y, r in zip(INPUTS, LABELS, RATIONALES)]
    features = prepare_dss_features(Dataset.from_list(records), tok, model=model)
    raw = label_confidences(model, tok, data(), label_candidates=CANDIDATES)
    tokenised = label_confidences(model, tok, features, label_candidates=CANDIDATES, batch_size=4)
    np.testing.assert_allclose(
        np.stack(tokenised.candidate_probabilities), np.stack(raw.candidate_probabilities), atol=1e-6
    )
    without_text = features.remove_columns(["input", "label", "rationale"])
    decoded = label_confidences(model, tok, without_text, mode="sequence", max_new_tokens=6)
    assert decoded.references == LABELS  # the gold label decoded from the target positions of `labels`
    assert (
        decoded.predictions
        == label_confidences(model, tok, data(), mode="sequence", max_new_tokens=6).predictions
    )


def naive_generation(model, prompt, steps):
    """Greedy decoding one token at a time, full forward pass each step; log-probs and the first softmax."""
    ids, log_probs, first = list(prompt), [], None
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        probs = torch.softmax(logits, -1)
        first = probs.max().item() if first is None else first
        token = int(torch.argmax(logits))
        log_probs.append(torch.log(probs[token]).item())
        ids.append(token)
        if token == model.generation_config.eos_token_id:
            break
    return ids[len(prompt) :], log_probs, first


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sequence_confidence_is_the_probability_of_the_generated_tokens(tok, trained, architecture):
    model = trained[architecture]
    result = label_confidences(model, tok, data(), mode="sequence", max_new_tokens=6, batch_size=4)
    prompts = causal_prompts(tok, [PREDICT_PREFIX + x for x in INPUTS])
    ended = 0
    for i, prompt in enumerate(prompts):
        generated, log_probs, _ = naive_generation(model, prompt, 6)
        ended += generated[-1] == tok.eos_token_id
        assert result.predictions[i] == tok.decode(generated, skip_special_tokens=True).strip()
        assert "predict" not in result.predictions[i]
        # a separate forward pass over prompt + generated tokens gives the same probability
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + generated])).logits[0].double()
        scored = torch.log_softmax(logits, -1)
        total = sum(scored[len(prompt) - 1 + t, token].item() for t, token in enumerate(generated))
        assert total == pytest.approx(sum(log_probs), abs=1e-5)
        assert result.confidences[i] == pytest.approx(np.exp(total), rel=1e-4, abs=1e-7)
    assert ended >= 4  # most generations stop at EOS before the limit: the EOS cut is exercised
    assert result.accuracy > 0.5


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_first_token_confidence_is_the_top_probability_after_the_prompt(tok, trained, architecture):
    model = trained[architecture]
    result = label_confidences(model, tok, data(), mode="first_token", max_new_tokens=6, batch_size=4)
    for i, prompt in enumerate(causal_prompts(tok, [PREDICT_PREFIX + x for x in INPUTS])):
        _, _, first = naive_generation(model, prompt, 1)
        assert result.confidences[i] == pytest.approx(first, abs=1e-5)


def test_first_token_confidence_skips_steps_a_logits_processor_forces(tok, trained):
    model = copy.deepcopy(trained["llama"])
    # a forced first token only applies to a one-token input (never a prompt); </s> is forced at the limit
    model.generation_config.forced_bos_token_id = tok.convert_tokens_to_ids("maybe")
    model.generation_config.forced_eos_token_id = tok.eos_token_id
    result = label_confidences(model, tok, data(), mode="first_token", max_new_tokens=2, batch_size=4)
    for i, prompt in enumerate(causal_prompts(tok, [PREDICT_PREFIX + x for x in INPUTS])):
        _, _, first = naive_generation(model, prompt, 1)
        assert result.confidences[i] == pytest.approx(first, abs=1e-5)
    # with one new token the only step is the forced </s>: no step the model chose, no confidence
    with pytest.raises(ValueError, match=r"example 0\b.*forced by a logits processor.*max_new_tokens"):
        label_confidences(model, tok, data(), mode="first_token", max_new_tokens=1)


def test_a_generation_config_without_eos_stops_at_the_eos_the_confidence_ends_at(tok, trained):
    model = copy.deepcopy(trained["llama"])
    model.generation_config.eos_token_id = None  # the model config and the tokenizer still name </s>
    result = label_confidences(model, tok, data(), mode="sequence", max_new_tokens=8, batch_size=4)
    assert result.predictions == LABELS  # not "yes yes yes yes": the label ends at </s>
    for i, text in enumerate(INPUTS):
        expected = np.exp(naive_log_likelihood(model, tok, text, LABELS[i]))
        assert result.confidences[i] == pytest.approx(expected, rel=1e-4)


def test_generations_stop_at_the_eos_training_appends_when_the_generation_config_has_none(
    tok, trained, tmp_path, make_args
):
    """A student whose generation config names no EOS (a BERT checkpoint used as a decoder, with
    ``tokenizer.eos_token`` set by hand) still stops where training taught it to: at the tokenizer's EOS
    that ends every target. The reference is the fitted model's greedy decoding stopped there by hand."""
    model = copy.deepcopy(trained["llama"])
    model.generation_config.eos_token_id = None
    model.config.eos_token_id = None  # only the tokenizer names </s>
    prompts = causal_prompts(tok, [PREDICT_PREFIX + x for x in INPUTS])
    expected = []
    for prompt in prompts:
        generated, _, _ = naive_generation(model, prompt, 8)  # runs on past </s>: the config names no EOS
        assert tok.eos_token_id in generated
        expected.append(tok.decode(generated[: generated.index(tok.eos_token_id)]).strip())
    assert expected == LABELS  # the fitted labels, each followed by more text after </s>
    texts = generate_texts(model, tok, INPUTS, prefix=PREDICT_PREFIX, max_new_tokens=8, batch_size=4)
    assert texts == expected
    rows = predict_texts(model, tok, INPUTS, label_max_new_tokens=8, rationale_max_new_tokens=8)
    assert [row["label"] for row in rows] == expected
    records = [{"input": x, "label": y, "rationale": r} for x, y, r in zip(INPUTS, LABELS, RATIONALES)]
    features = prepare_dss_features(Dataset.from_list(records), tok, model=model)
    trainer = DSSMITrainer(model=model, args=make_args(tmp_path), processing_class=tok)
    output = trainer.predict(features, max_new_tokens=8)
    assert [row["prediction"] for row in trainer.decode_predictions(output.predictions)] == expected
    assert model.generation_config.eos_token_id is None  # the student's own config is left as it was


def test_max_length_counts_generated_tokens_for_a_causal_student(tok, trained):
    model = trained["llama"]
    untrained = build_tiny_causal_lm(tok, "llama", seed=3)  # never emits EOS early
    result = label_confidences(untrained, tok, data(), mode="sequence", max_length=3)
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in result.predictions]
    assert max(lengths) == 3  # every prompt is longer than 3 tokens: a total length would allow none
    assert label_confidences(model, tok, data(), mode="sequence", max_length=6).predictions == (
        label_confidences(model, tok, data(), mode="sequence", max_new_tokens=6).predictions
    )


def test_ece_callback_and_evaluate_calibration_serve_causal_students(tok, trained, tmp_path, make_args):
    model = trained["gpt2"]
    records = [{"input": x, "label": y, "rationale": r} for x, y, r in zip(INPUTS, LABELS, RATIONALES)]
    features = prepare_dss_features(Dataset.from_list(records), tok, model=model)
    callback = ECECallback(label_candidates=CANDIDATES, plot=False)
    trainer = DSSMITrainer(
        model=model,
        args=make_args(tmp_path, generation_max_length=6),
        processing_class=tok,
        eval_dataset=features,
        callbacks=[callback],
    )
    metrics = trainer.evaluate()
    direct = label_confidences(model, tok, data(), label_candidates=CANDIDATES)
    assert metrics["eval_ece"] == pytest.approx(direct.ece(), abs=1e-6)
    assert metrics["eval_avg_confidence"] == pytest.approx(direct.average_confidence, abs=1e-6)
    model.save_pretrained(tmp_path / "student")
    tok.save_pretrained(tmp_path / "student")
    report = evaluate_calibration(
        str(tmp_path / "student"), None, data(), label_candidates=CANDIDATES, device="cpu"
    )
    assert report["accuracy"] == pytest.approx(direct.accuracy)
    assert report["ece"] == pytest.approx(direct.ece(), abs=1e-6)


def test_pipeline_generation_helpers_strip_the_prompt(tok, trained):
    model = trained["llama"]
    texts = generate_texts(model, tok, INPUTS, prefix=PREDICT_PREFIX, max_new_tokens=6, batch_size=4)
    for text, prompt in zip(texts, causal_prompts(tok, [PREDICT_PREFIX + x for x in INPUTS])):
        generated, _, _ = naive_generation(model, prompt, 6)
        assert text == tok.decode(generated, skip_special_tokens=True).strip()
    rows = predict_texts(model, tok, INPUTS, label_max_new_tokens=6, rationale_max_new_tokens=4, batch_size=4)
    assert [row["label"] for row in rows] == texts
    expected = generate_texts(model, tok, INPUTS, prefix=EXPLAIN_PREFIX, max_new_tokens=4)
    assert [row["rationale"] for row in rows] == expected
    assert all(0.0 <= row["confidence"] <= 1.0 for row in rows)


def test_the_candidate_benchmark_runs_and_its_strategies_agree(capsys):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "benchmarks" / "causal_candidates.py"
    spec = importlib.util.spec_from_file_location("bench_causal_candidates", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    summary = module.main(["--smoke"])
    assert set(summary["median_seconds"]) == {"cache", "full"}
    assert summary["max_score_difference"] < 1e-4
    assert "x cache" in capsys.readouterr().out


# A template whose turns end with "eot", not with EOS: a candidate scored in the plain layout ("yes </s>")
# is not the target training put after a chat prompt ("yes eot </s>").
TURN_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} eot {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def chat_log_likelihood(model, tok, text, target):
    """log p(target | chat prompt) from the training features of that one (text, target) pair."""
    row = prepare_dss_features(
        Dataset.from_dict({"input": [text], "label": [target], "rationale": ["r"]}),
        tok,
        student_type="causal",
        chat_template=True,
        with_rationale=False,
    )[0]
    ids, labels = row["input_ids"], row["labels"]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    return sum(log_probs[t - 1, labels[t]].item() for t in range(1, len(ids)) if labels[t] != -100)


def test_chat_template_candidates_are_scored_as_the_assistant_turn(trained):
    chat_tok = build_word_tokenizer([PREDICT_PREFIX + x for x in INPUTS] + LABELS + ["user assistant eot r"])
    chat_tok.chat_template = TURN_TEMPLATE
    model = build_tiny_causal_lm(chat_tok, "llama", seed=3).eval()
    features = prepare_dss_features(
        Dataset.from_dict({"input": INPUTS, "label": LABELS, "rationale": ["r"] * len(INPUTS)}),
        chat_tok,
        student_type="causal",
        chat_template=True,
        with_rationale=False,
    )
    target = [t for t, label in zip(features[0]["input_ids"], features[0]["labels"]) if label != -100]
    assert chat_tok.decode(target) == "yes eot </s>"
    expected = []
    for text in INPUTS:
        scores = np.array([chat_log_likelihood(model, chat_tok, text, c) for c in CANDIDATES])
        expected.append(np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum())
    from_features = label_confidences(
        model, chat_tok, features, label_candidates=CANDIDATES, chat_template=True
    )
    from_text = label_confidences(model, chat_tok, data(), label_candidates=CANDIDATES, chat_template=True)
    for result in (from_features, from_text):
        for got, want in zip(result.candidate_probabilities, expected):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    plain = label_confidences(model, chat_tok, features, label_candidates=CANDIDATES)
    assert not np.allclose(plain.candidate_probabilities[0], expected[0], rtol=1e-4, atol=1e-6)
    callback = ECECallback(label_candidates=CANDIDATES, chat_template=True, plot=False)
    trainer = SimpleNamespace(
        model=model,
        processing_class=chat_tok,
        args=SimpleNamespace(output_dir=None, per_device_eval_batch_size=4, generation_max_length=None),
        state=SimpleNamespace(global_step=1),
        is_world_process_zero=lambda: True,
    )
    metrics = callback.evaluation_metrics(trainer, features, "eval")
    chosen = [float(p.max()) for p in expected]
    assert metrics["eval_avg_confidence"] == pytest.approx(np.mean(chosen), abs=1e-6)
    with pytest.raises(ValueError, match="chat_template=True is for decoder-only"):
        from hf_cotmi import build_tiny_seq2seq

        label_confidences(build_tiny_seq2seq(chat_tok, "t5"), chat_tok, data(), chat_template=True)
    with pytest.raises(ValueError, match="chat_template=True is for decoder-only"):
        generate_texts(
            build_tiny_seq2seq(chat_tok, "t5"), chat_tok, INPUTS, prefix=PREDICT_PREFIX, max_new_tokens=2,
            chat_template=True,
        )  # fmt: skip


def test_generated_accuracy_of_a_chat_student_generates_from_the_chat_prompt():
    """In candidates mode the generated label's accuracy is a second pass; it must use the chat prompt too."""
    chat_tok = build_word_tokenizer([PREDICT_PREFIX + x for x in INPUTS] + LABELS + ["user assistant eot r"])
    chat_tok.chat_template = TURN_TEMPLATE
    model = build_tiny_causal_lm(chat_tok, "llama", seed=3).eval()
    seen: list[str] = []

    def recording_match(prediction: str, gold: str) -> bool:
        seen.append(prediction)
        return prediction == gold

    report = evaluate_calibration(
        model, chat_tok, data(), label_candidates=CANDIDATES, chat_template=True, max_new_tokens=4,
        is_correct=recording_match,
    )  # fmt: skip
    chat = generate_texts(
        model, chat_tok, INPUTS, prefix=PREDICT_PREFIX, max_new_tokens=4, chat_template=True
    )
    plain = generate_texts(model, chat_tok, INPUTS, prefix=PREDICT_PREFIX, max_new_tokens=4)
    assert chat != plain  # the two prompts give different generations: the check below can tell them apart
    generated = seen[-len(INPUTS) :]  # the candidates pass records first, the generation pass last
    assert [p.strip() for p in generated] == [t.strip() for t in chat]
    assert report["generated_accuracy"] == pytest.approx(
        sum(p == g for p, g in zip(generated, LABELS)) / len(LABELS)
    )


@pytest.mark.parametrize("container", ["dict", "dataset", "rows"])
def test_raw_nli_rows_are_prompted_as_the_features_join_them(container):
    """A student whose EOS is not "</s>": raw premise/hypothesis rows read as its features were built."""
    nli_tok = build_word_tokenizer(["a man sleeps he rests a cat runs it moves", *CANDIDATES])
    nli_tok.eos_token = "<sep>"
    model = build_tiny_causal_lm(nli_tok, "llama", seed=2).eval()
    premises, hypotheses = ["a man sleeps", "a cat runs"], ["he rests", "it moves"]
    columns = {
        "premise": premises,
        "hypothesis": hypotheses,
        "input": [f"{p}</s>{h}" for p, h in zip(premises, hypotheses)],  # what load_dss_dataset writes
        "label": ["yes", "no"],
        "rationale": ["r", "r"],
    }
    raw = {
        "dict": columns,
        "dataset": Dataset.from_dict(columns),
        "rows": [dict(zip(columns, values)) for values in zip(*columns.values())],
    }[container]
    got = label_confidences(model, nli_tok, raw, label_candidates=CANDIDATES)
    features = prepare_dss_features(
        Dataset.from_dict(columns), nli_tok, student_type="causal", with_rationale=False
    )
    from_features = label_confidences(model, nli_tok, features, label_candidates=CANDIDATES)
    for a, b in zip(got.candidate_probabilities, from_features.candidate_probabilities):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    as_written = label_confidences(
        model, nli_tok, {"text": columns["input"], "label": columns["label"]}, input_column="text",
        label_candidates=CANDIDATES,
    )  # fmt: skip
    assert not np.allclose(as_written.candidate_probabilities[0], got.candidate_probabilities[0])


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_candidates_that_tokenise_alike_are_scored_once(tok, trained, architecture):
    """ "Yes" and " yes" give the target ids of "yes" here: one sequence, whose probability is not split."""
    model = trained[architecture]
    prompt = PREDICT_PREFIX + INPUTS[0]
    alike = candidate_target_ids(tok, prompt, ["yes", "Yes", " yes"])
    assert alike[0] == alike[1] == alike[2]
    result = label_confidences(
        model, tok, data(), label_candidates=["yes", "Yes", "no", " yes"], batch_size=4
    )
    for i, text in enumerate(INPUTS):
        reference = np.array([naive_log_likelihood(model, tok, text, c) for c in ["yes", "no"]])
        expected = np.exp(reference - reference.max())
        expected /= expected.sum()
        np.testing.assert_allclose(result.candidate_probabilities[i], expected, atol=1e-5)
        assert result.confidences[i] == pytest.approx(expected.max(), abs=1e-5)
        assert result.predictions[i] == ["yes", "no"][int(np.argmax(expected))]


def penalised_generation(model, tok, prompt, num_beams, max_new_tokens=6):
    """``model.generate`` for one unpadded prompt under the model's generation config, cut after EOS."""
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([prompt]),
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
        )[0, len(prompt) :].tolist()
    return out[: out.index(tok.eos_token_id) + 1] if tok.eos_token_id in out else out


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_generation_confidences_are_the_models_probabilities_under_a_repetition_penalty(
    tok, trained, architecture, num_beams
):
    """The penalty (on the prompt's tokens too) chooses the tokens; the confidence is the model's own."""
    model = copy.deepcopy(trained[architecture])
    model.generation_config.repetition_penalty = 5.0
    sequence = label_confidences(
        model, tok, data(), mode="sequence", max_new_tokens=6, batch_size=4, num_beams=num_beams
    )
    first_token = label_confidences(
        model, tok, data(), mode="first_token", max_new_tokens=6, batch_size=4, num_beams=num_beams
    )
    for i, prompt in enumerate(causal_prompts(tok, [PREDICT_PREFIX + x for x in INPUTS])):
        generated = penalised_generation(model, tok, prompt, num_beams)
        assert sequence.predictions[i] == tok.decode(generated, skip_special_tokens=True).strip()
        with torch.no_grad():  # one teacher-forced pass over prompt + generated tokens, no processors
            logits = model(input_ids=torch.tensor([prompt + generated])).logits[0].double()
        log_probs = torch.log_softmax(logits, -1)[len(prompt) - 1 :]
        total = sum(log_probs[t, token].item() for t, token in enumerate(generated))
        assert sequence.confidences[i] == pytest.approx(np.exp(total), rel=1e-4, abs=1e-7)
        assert first_token.confidences[i] == pytest.approx(log_probs[0].exp().max().item(), abs=1e-5)
