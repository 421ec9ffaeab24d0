"""ECECallback: direct hook calls, a DSSMITrainer training run, and the plain-Trainer fallback."""

from __future__ import annotations

import os
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from conftest import training_arguments

from hf_cotmi import ECECallback, build_tiny_seq2seq, build_word_tokenizer, label_confidences

INPUTS = [
    "a man sleeps",
    "a cat runs",
    "two dogs bark",
    "kids play outside",
    "the sun is hot",
    "rain falls now",
]
LABELS = ["yes", "no", "maybe", "yes", "no", "maybe"]
RATIONALES = ["he rests", "it moves fast", "dogs are loud", "kids like games", "summer is warm", "it is wet"]
OOD_INPUTS = ["a bird sings", "snow is cold", "the man runs"]
OOD_LABELS = ["yes", "maybe", "no"]
CANDIDATES = ["yes", "no", "maybe"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(
        ["predict: " + x for x in INPUTS + OOD_INPUTS]
        + ["explain: " + x for x in INPUTS]
        + LABELS
        + RATIONALES
    )


def features(tok, inputs, labels, rationales=None):
    """DSS features as prepare_dss_features writes them (built by hand here)."""
    pred = tok(["predict: " + x for x in inputs])
    columns = {
        "input_ids": pred["input_ids"],
        "attention_mask": pred["attention_mask"],
        "labels": tok(text_target=labels)["input_ids"],
        "input": list(inputs),
        "label": list(labels),
    }
    if rationales is not None:
        expl = tok(["explain: " + x for x in inputs])
        columns.update(
            expl_input_ids=expl["input_ids"],
            expl_attention_mask=expl["attention_mask"],
            rationale_labels=tok(text_target=rationales)["input_ids"],
        )
    return datasets.Dataset.from_dict(columns)


def assert_png(path):
    assert os.path.isfile(path)
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    from matplotlib.image import imread

    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def fake_trainer(model, tok, output_dir, step=7):
    args = SimpleNamespace(
        output_dir=str(output_dir),
        per_device_eval_batch_size=4,
        generation_max_length=6,
        generation_num_beams=None,
        predict_prefix="predict: ",
    )
    return SimpleNamespace(
        model=model,
        processing_class=tok,
        args=args,
        state=SimpleNamespace(global_step=step),
        is_world_process_zero=lambda: True,
    )


def naive_ece(conf, correct, n_bins):
    total = 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        idx = [i for i, c in enumerate(conf) if lo <= c < hi or (m == n_bins - 1 and c == 1.0)]
        if idx:
            total += (
                len(idx)
                / len(conf)
                * abs(np.mean([correct[i] for i in idx]) - np.mean([conf[i] for i in idx]))
            )
    return total


@pytest.mark.parametrize("mode", ["candidates", "sequence", "first_token"])
def test_evaluation_metrics_direct(tok, tmp_path, mode):
    model = build_tiny_seq2seq(tok, "t5", seed=4)
    ds = features(tok, INPUTS, LABELS)
    callback = ECECallback(
        n_bins=5,
        confidence=mode,
        label_candidates=CANDIDATES if mode == "candidates" else None,
        plot=(mode == "candidates"),
    )
    metrics = callback.evaluation_metrics(fake_trainer(model, tok, tmp_path), ds, "eval_ood")
    reference = label_confidences(
        model, tok, ds, mode=mode, label_candidates=CANDIDATES if mode == "candidates" else None, max_length=6
    )
    conf, correct = reference.confidences.tolist(), reference.correct.tolist()
    if mode == "candidates":  # the arg-max candidate's accuracy, counted by hand from its correctness
        assert set(metrics) == {"eval_ood_ece", "eval_ood_avg_confidence", "eval_ood_choice_accuracy"}
        assert metrics["eval_ood_choice_accuracy"] == pytest.approx(sum(correct) / len(correct))
    else:
        assert set(metrics) == {"eval_ood_ece", "eval_ood_avg_confidence"}
    assert metrics["eval_ood_ece"] == pytest.approx(naive_ece(conf, correct, 5), abs=1e-6)
    assert metrics["eval_ood_avg_confidence"] == pytest.approx(np.mean(conf), abs=1e-6)
    assert callback.last_results["eval_ood"].mode == mode
    if mode == "candidates":
        path = tmp_path / "reliability_diagrams" / "eval_ood_step7.png"
        assert callback.last_plots["eval_ood"] == str(path)
        assert_png(path)
    else:
        assert not (tmp_path / "reliability_diagrams").exists()


def test_constructor_validates_arguments():
    with pytest.raises(ValueError, match="`n_bins` must be a positive integer"):
        ECECallback(n_bins=0)
    with pytest.raises(ValueError, match="`confidence` must be one of"):
        ECECallback(confidence="tokens")
    with pytest.raises(ValueError, match="`confidence='candidates'` needs `label_candidates`"):
        ECECallback(confidence="candidates")
    with pytest.raises(ValueError, match="`binning` must be"):
        ECECallback(binning="equal")
    assert ECECallback().mode == "sequence"
    assert ECECallback(label_candidates="choices").mode == "candidates"


@pytest.mark.parametrize("mode", ["sequence", "first_token"])
@pytest.mark.parametrize("task", [None, "esnli", "svamp"])
@pytest.mark.parametrize("candidates", [CANDIDATES, "choices"])
def test_label_candidates_with_a_generation_confidence_is_refused(mode, task, candidates):
    # they would be dropped: sequence and first_token score the generated label, no choice ranking
    with pytest.raises(
        ValueError,
        match=f"`label_candidates` is used only by `confidence='candidates'`; "
        f"`confidence='{mode}'` scores the generated label and would ignore them",
    ):
        ECECallback(confidence=mode, label_candidates=candidates, task=task)
    assert ECECallback(confidence=mode, task=task).label_candidates is None  # a task's own ones are not given


def test_dssmi_trainer_logs_ece_per_dataset(tok, tmp_path):
    from hf_cotmi import DSSDataCollator, DSSMITrainer

    model = build_tiny_seq2seq(tok, "t5", seed=0)
    train = features(tok, INPUTS, LABELS, RATIONALES)
    in_domain = features(tok, INPUTS, LABELS)
    ood = features(tok, OOD_INPUTS, OOD_LABELS)
    callback = ECECallback(n_bins=5, label_candidates=CANDIDATES)
    calls = []
    compute = callback._compute
    callback._compute = lambda *a, **k: calls.append(a[5]) or compute(*a, **k)
    args = training_arguments(
        tmp_path,
        max_steps=4,
        per_device_train_batch_size=3,
        per_device_eval_batch_size=4,
        learning_rate=3e-3,
        eval_strategy="steps",
        eval_steps=2,
        logging_steps=2,
        metric_for_best_model="ece",
        greater_is_better=False,
        generation_max_length=5,
        seed=42,  # the transformers default this test was written with
        data_seed=None,
    )
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tok,
        train_dataset=train,
        eval_dataset=in_domain,
        data_collator=DSSDataCollator(tok, model=model),
        callbacks=[callback],
    )
    trainer.train()
    evals = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert [entry["step"] for entry in evals] == [2, 4]
    for entry in evals:
        assert 0.0 <= entry["eval_ece"] <= 1.0
        assert 0.0 <= entry["eval_avg_confidence"] <= 1.0
    # the value logged at step 4 is the one for the final weights
    final = label_confidences(trainer.model, tok, in_domain, label_candidates=CANDIDATES)
    assert evals[-1]["eval_ece"] == pytest.approx(final.ece(n_bins=5), abs=1e-6)
    assert evals[-1]["eval_avg_confidence"] == pytest.approx(final.average_confidence, abs=1e-6)
    assert evals[-1]["eval_choice_accuracy"] == pytest.approx(float(np.mean(final.correct)))
    # usable as metric_for_best_model
    assert trainer.state.best_metric == pytest.approx(min(entry["eval_ece"] for entry in evals))
    assert_png(tmp_path / "reliability_diagrams" / "eval_step2.png")
    assert_png(tmp_path / "reliability_diagrams" / "eval_step4.png")
    assert calls == ["eval", "eval"]  # the on_evaluate fallback did not compute a second time

    # a dict of evaluation sets: one set of keys per name, each in the log history
    metrics = trainer.evaluate(eval_dataset={"id": in_domain, "ood": ood})
    assert {"eval_id_ece", "eval_ood_ece", "eval_id_avg_confidence", "eval_ood_avg_confidence"} <= set(
        metrics
    )
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {"eval_id_ece", "eval_ood_ece"} <= logged
    ood_ref = label_confidences(trainer.model, tok, ood, label_candidates=CANDIDATES)
    assert metrics["eval_ood_ece"] == pytest.approx(ood_ref.ece(n_bins=5), abs=1e-6)
    assert_png(tmp_path / "reliability_diagrams" / "eval_ood_step4.png")
    assert calls == ["eval", "eval", "eval_id", "eval_ood"]


def test_plain_seq2seq_trainer_fallback(tok, tmp_path):
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    model = build_tiny_seq2seq(tok, "bart", seed=5)
    # remove_unused_columns=True (the default) drops the text columns: gold labels come from `labels`.
    # (A text column named "label" would be kept by the Trainer and confuse DataCollatorForSeq2Seq.)
    in_domain = features(tok, INPUTS, LABELS).remove_columns("label")
    ood = features(tok, OOD_INPUTS, OOD_LABELS).remove_columns("label")
    args = Seq2SeqTrainingArguments(
        str(tmp_path), per_device_eval_batch_size=4, report_to="none", use_cpu=True, disable_tqdm=True
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        processing_class=tok,
        eval_dataset={"id": in_domain, "ood": ood},
        data_collator=DataCollatorForSeq2Seq(tok, model=model),
        callbacks=[ECECallback(n_bins=5, label_candidates=CANDIDATES, plot=False)],
    )
    metrics = trainer.evaluate()
    reference = label_confidences(model, tok, ood, label_candidates=CANDIDATES)
    assert metrics["eval_ood_ece"] == pytest.approx(reference.ece(n_bins=5), abs=1e-6)
    assert metrics["eval_ood_avg_confidence"] == pytest.approx(reference.average_confidence, abs=1e-6)
    assert "eval_id_ece" in metrics
    # documented limitation: without the DSSMITrainer hook the keys miss the log history
    assert not any("eval_ood_ece" in entry for entry in trainer.state.log_history)
    assert not (tmp_path / "reliability_diagrams").exists()


def test_the_ece_follows_the_generation_options_of_the_evaluate_call(tok, tmp_path):
    """trainer.evaluate(max_new_tokens=..., num_beams=...) generates the accuracy's labels with those
    options; the confidences behind the ECE must come from the same generation."""
    from hf_cotmi import DSSDataCollator, DSSMITrainer

    model = build_tiny_seq2seq(tok, "t5", seed=0)
    in_domain = features(tok, INPUTS, LABELS)
    trainer = DSSMITrainer(
        model=model,
        args=training_arguments(tmp_path, generation_max_length=6),
        processing_class=tok,
        eval_dataset=in_domain,
        data_collator=DSSDataCollator(tok, model=model),
        callbacks=[ECECallback(n_bins=5, plot=False)],
    )
    asked = trainer.evaluate(max_new_tokens=2, num_beams=2)
    reference = label_confidences(model, tok, in_domain, max_new_tokens=2, num_beams=2)
    assert asked["eval_avg_confidence"] == pytest.approx(reference.average_confidence, abs=1e-6)
    assert trainer.evaluation_generation_kwargs == {}  # only while that call runs
    # without options: the training arguments' limit, as before
    default = trainer.evaluate()
    by_args = label_confidences(model, tok, in_domain, max_length=6)
    assert default["eval_avg_confidence"] == pytest.approx(by_args.average_confidence, abs=1e-6)
    assert reference.average_confidence != pytest.approx(by_args.average_confidence, abs=1e-6)


@pytest.mark.parametrize("arch", ["t5", "encoder-decoder"])
def test_evaluate_calibration_saved_model(tok, tmp_path, arch):
    from hf_cotmi import evaluate_calibration

    model = build_tiny_seq2seq(tok, arch, seed=6)
    model.save_pretrained(tmp_path / "student")
    tok.save_pretrained(tmp_path / "student")
    raw = {"input": list(OOD_INPUTS), "label": list(OOD_LABELS)}
    report = evaluate_calibration(
        str(tmp_path / "student"),
        None,
        raw,
        label_candidates=CANDIDATES,
        n_bins=5,
        plot_path=tmp_path / "diagram.png",
        device="cpu",
    )
    reference = label_confidences(model, tok, raw, label_candidates=CANDIDATES)
    assert report["accuracy"] == pytest.approx(reference.accuracy)
    assert report["ece"] == pytest.approx(
        naive_ece(reference.confidences.tolist(), reference.correct.tolist(), 5), abs=1e-6
    )
    assert report["avg_confidence"] == pytest.approx(reference.average_confidence, abs=1e-6)
    assert report["num_examples"] == 3 and report["confidence_mode"] == "candidates"
    # candidates mode reports the choice-ranking accuracy and, separately, the generated label's
    assert report["choice_accuracy"] == report["accuracy"]
    from hf_cotmi.metrics import normalize_text
    from hf_cotmi.pipeline import generate_texts

    texts = generate_texts(model, tok, raw["input"], prefix="predict: ", max_new_tokens=64)
    hits = [normalize_text(text) == normalize_text(gold) for text, gold in zip(texts, raw["label"])]
    assert report["generated_accuracy"] == pytest.approx(sum(hits) / len(hits))
    assert report["reliability_diagram"] == str(tmp_path / "diagram.png")
    assert_png(tmp_path / "diagram.png")
    # an in-memory model, sequence mode, no diagram
    in_memory = evaluate_calibration(model, tok, raw, max_new_tokens=3)
    assert in_memory["confidence_mode"] == "sequence" and "reliability_diagram" not in in_memory
    with pytest.raises(ValueError, match="`tokenizer` is None"):
        evaluate_calibration(model, None, raw)


def test_without_matplotlib(monkeypatch, tmp_path, caplog):
    """matplotlib is a core dependency now: the callback keeps plotting, and a broken install is named."""
    import sys

    from hf_cotmi import save_reliability_diagram

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ImportError, match=r"matplotlib is needed .* dependency of hf-cotmi"):
        save_reliability_diagram([0.5], [1], tmp_path / "x.png")
    with caplog.at_level("WARNING", logger="hf_cotmi.callbacks"):
        callback = ECECallback()
    assert callback.plot is True  # no "is matplotlib there?" branch any more
    assert caplog.text == ""
    assert not (tmp_path / "x.png").exists()


def test_a_task_supplies_its_confidence_mode_to_evaluate_calibration_as_to_the_callback(tok):
    from hf_cotmi import evaluate_calibration
    from hf_cotmi.tasks import TaskSpec

    model = build_tiny_seq2seq(tok, "t5", seed=6)
    raw = {"input": list(OOD_INPUTS), "label": list(OOD_LABELS)}
    spec = TaskSpec.custom(confidence="first_token")
    report = evaluate_calibration(model, tok, raw, task=spec, max_new_tokens=3)
    assert report["confidence_mode"] == "first_token" == ECECallback(task=spec).mode
    reference = label_confidences(model, tok, raw, mode="first_token", max_new_tokens=3)
    assert report["avg_confidence"] == pytest.approx(reference.average_confidence, abs=1e-6)
    # the caller's choice still wins, and given candidates alone mean candidates mode, in both
    assert (
        evaluate_calibration(model, tok, raw, task=spec, confidence="sequence")["confidence_mode"]
        == "sequence"
    )
    chosen = evaluate_calibration(model, tok, raw, task=spec, label_candidates=CANDIDATES)
    assert (
        chosen["confidence_mode"] == "candidates" == ECECallback(task=spec, label_candidates=CANDIDATES).mode
    )


def ece_trainer(tok, tmp_path, model, eval_dataset, **overrides):
    from hf_cotmi import DSSDataCollator, DSSMITrainer

    return DSSMITrainer(
        model=model,
        args=training_arguments(tmp_path, generation_max_length=6, **overrides),
        processing_class=tok,
        eval_dataset=eval_dataset,
        data_collator=DSSDataCollator(tok, model=model),
        callbacks=[ECECallback(n_bins=5, plot=False)],
    )


@pytest.mark.parametrize("source", ["model", "evaluate"])
def test_the_ece_generates_with_the_beams_the_accuracy_generates_with(tok, tmp_path, source):
    """The accuracy's generate() takes num_beams from the model's generation config (which
    args.generation_config replaces, and a checkpoint's generation_config.json fills) or from a
    generation_config passed to evaluate(); the confidences behind the ECE were generated greedily."""
    from transformers import GenerationConfig

    model = build_tiny_seq2seq(tok, "t5", seed=0)
    in_domain = features(tok, INPUTS, LABELS)
    trainer = ece_trainer(tok, tmp_path, model, in_domain)
    if source == "model":
        model.generation_config.num_beams = 3
        metrics = trainer.evaluate()
        reference = label_confidences(model, tok, in_domain, max_length=6, num_beams=3)
    else:
        given = GenerationConfig(num_beams=3, max_new_tokens=2, decoder_start_token_id=tok.pad_token_id)
        metrics = trainer.evaluate(generation_config=given)
        reference = label_confidences(model, tok, in_domain, max_new_tokens=2, num_beams=3)
    greedy = label_confidences(
        model,
        tok,
        in_domain,
        num_beams=1,
        **({"max_length": 6} if source == "model" else {"max_new_tokens": 2}),
    )
    assert reference.average_confidence != pytest.approx(greedy.average_confidence, abs=1e-6)
    assert metrics["eval_avg_confidence"] == pytest.approx(reference.average_confidence, abs=1e-6)
    assert metrics["eval_ece"] == pytest.approx(reference.ece(5), abs=1e-6)


def test_the_ece_of_an_iterable_evaluation_set(tok, tmp_path):
    """The Trainer evaluates a datasets.IterableDataset; the callback failed on it with "object of type
    'IterableDataset' has no len()" once the evaluation loop had run (in training: after the first
    evaluation, losing the run)."""
    model = build_tiny_seq2seq(tok, "t5", seed=0)
    in_domain = features(tok, INPUTS, LABELS)
    trainer = ece_trainer(tok, tmp_path, model, in_domain.to_iterable_dataset())
    streamed = trainer.evaluate()
    reference = label_confidences(model, tok, in_domain, max_length=6)
    assert streamed["eval_avg_confidence"] == pytest.approx(reference.average_confidence, abs=1e-6)
    assert streamed["eval_ece"] == pytest.approx(reference.ece(5), abs=1e-6)
    assert streamed["eval_ece"] == pytest.approx(trainer.evaluate(in_domain)["eval_ece"], abs=1e-9)


class TorchRows(torch.utils.data.IterableDataset):
    """The rows of a list as a ``torch.utils.data.IterableDataset``; with ``once=True`` the rows of one iterator,
    which a second read finds spent (a set behind a generator or a socket)."""

    def __init__(self, rows, once=False):
        self.rows, self.iterator = rows, iter(rows) if once else None
        self.reads = 0

    def __iter__(self):
        self.reads += 1
        return self.iterator if self.iterator is not None else iter(self.rows)


class SizedTorchRows(TorchRows):
    """:class:`TorchRows` with a length (torch allows one), still without rows to index."""

    def __len__(self):
        return len(self.rows)


def test_the_ece_of_a_torch_iterable_evaluation_set_with_a_length(tok, tmp_path):
    """A torch IterableDataset may have a length but has no rows to slice: the callback failed on it after
    the evaluation loop on one process ("must be a datasets.Dataset, a dict of columns or a list of row
    dicts"), where several processes read it into a list first."""
    model = build_tiny_seq2seq(tok, "t5", seed=0)
    in_domain = features(tok, INPUTS, LABELS)
    rows = SizedTorchRows(list(in_domain))
    metrics = ece_trainer(tok, tmp_path, model, rows).evaluate()
    reference = label_confidences(model, tok, in_domain, max_length=6)
    assert metrics["eval_avg_confidence"] == pytest.approx(reference.average_confidence, abs=1e-6)
    assert metrics["eval_ece"] == pytest.approx(reference.ece(5), abs=1e-6)
    assert rows.reads == 2  # one process: the evaluation loop's read, then the callback's


def test_the_plain_trainer_fallback_reads_a_torch_iterable_set_with_a_length(tok, tmp_path):
    """The fallback for trainers without the hook handed such a set to the calibration as it was, which
    refused it ("must be a datasets.Dataset, a dict of columns or a list of row dicts")."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    model = build_tiny_seq2seq(tok, "bart", seed=5)
    in_domain = features(tok, INPUTS, LABELS).remove_columns(["label", "input"])
    rows = SizedTorchRows(list(in_domain))
    args = Seq2SeqTrainingArguments(
        str(tmp_path), per_device_eval_batch_size=4, report_to="none", use_cpu=True, disable_tqdm=True
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        processing_class=tok,
        eval_dataset=rows,
        data_collator=DataCollatorForSeq2Seq(tok, model=model),
        callbacks=[ECECallback(n_bins=5, label_candidates=CANDIDATES, plot=False)],
    )
    metrics = trainer.evaluate()
    reference = label_confidences(model, tok, in_domain, label_candidates=CANDIDATES)
    assert metrics["eval_ece"] == pytest.approx(reference.ece(n_bins=5), abs=1e-6)
    assert metrics["eval_avg_confidence"] == pytest.approx(reference.average_confidence, abs=1e-6)


def test_an_evaluation_set_that_can_be_read_once_gets_a_clear_error(tok, tmp_path):
    """On one process the callback reads an iterable set after the evaluation loop has: a set that can be read
    only once gave it no rows and the error blamed the columns ("it has []")."""
    model = build_tiny_seq2seq(tok, "t5", seed=0)
    rows = TorchRows(list(features(tok, INPUTS, LABELS)), once=True)
    with pytest.raises(
        ValueError, match=r"`eval` evaluation set \(a TorchRows\) gave no rows .* read only once"
    ):
        ece_trainer(tok, tmp_path, model, rows).evaluate()
