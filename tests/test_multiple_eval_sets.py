"""Several named evaluation sets (``eval_dataset={"anli": ..., "esnli": ...}``) with ECECallback and best-model
selection: per-set keys, no set's numbers in another's, one reliability diagram per evaluation."""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

import pytest
from conftest import training_arguments
from tiny_task import make_records, make_tokenizer, tokenise

from hf_cotmi import DSSMITrainer, ECECallback, build_tiny_seq2seq
from hf_cotmi.metrics import build_compute_metrics

CANDIDATES = [str(total) for total in range(2, 19)]
PER_SET = ("loss", "loss_label", "loss_rationale", "loss_mi", "accuracy", "ece", "avg_confidence")
TIMINGS = ("runtime", "per_second", "epoch")


def without_timings(metrics: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if not any(part in key for part in TIMINGS)}


def digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.md5(handle.read()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny T5 trained 3 steps, evaluated on two named sets at every step, best checkpoint by ``eval_anli_ece``."""
    tokenizer = make_tokenizer()
    anli, esnli = tokenise(make_records(6, seed=1), tokenizer), tokenise(make_records(10, seed=2), tokenizer)
    output_dir = tmp_path_factory.mktemp("two-sets") / "out"
    callback = ECECallback(n_bins=5, label_candidates=CANDIDATES)
    trainer = DSSMITrainer(
        model=build_tiny_seq2seq(tokenizer, "t5", d_model=16, num_layers=1, num_heads=2, d_ff=32),
        args=training_arguments(
            output_dir,
            max_steps=3,
            eval_strategy="steps",
            eval_steps=1,
            save_strategy="steps",
            save_steps=1,
            load_best_model_at_end=True,
            metric_for_best_model="eval_anli_ece",
            learning_rate=5e-2,
        ),
        processing_class=tokenizer,
        train_dataset=tokenise(make_records(16, seed=0), tokenizer),
        eval_dataset={"anli": anli, "esnli": esnli},
        compute_metrics=build_compute_metrics(tokenizer),
        callbacks=[callback],
    )
    trainer.train()
    folder = output_dir / "reliability_diagrams"
    drawn_in_training = {path.name: digest(str(path)) for path in folder.iterdir()}
    return trainer, callback, anli, esnli, str(output_dir), drawn_in_training


def test_each_set_logs_its_own_keys_and_the_best_checkpoint_follows_the_named_metric(trained):
    trainer, _, _, _, output_dir, _ = trained
    logged = [entry for entry in trainer.state.log_history if "eval_anli_ece" in entry]
    assert [entry["step"] for entry in logged] == [1, 2, 3]
    for entry in logged:
        assert {f"eval_anli_{name}" for name in PER_SET} <= set(entry)
        assert not any(key.startswith("eval_esnli_") for key in entry)  # each set has a log entry of its own
    # lower ECE is better: the checkpoint kept is the step with the smallest logged eval_anli_ece
    assert trainer.args.greater_is_better is False
    best = min(logged, key=lambda entry: entry["eval_anli_ece"])
    assert trainer.state.best_metric == pytest.approx(best["eval_anli_ece"])
    assert trainer.state.best_model_checkpoint == os.path.join(output_dir, f"checkpoint-{best['step']}")


def test_the_dict_gives_the_numbers_of_each_set_evaluated_alone(trained):
    trainer, _, anli, esnli, _, _ = trained
    together = without_timings(trainer.evaluate())
    alone = {
        **without_timings(trainer.evaluate(eval_dataset=anli, metric_key_prefix="eval_anli")),
        **without_timings(trainer.evaluate(eval_dataset=esnli, metric_key_prefix="eval_esnli")),
    }
    assert together == alone
    test = without_timings(trainer.evaluate(eval_dataset=anli, metric_key_prefix="test"))
    assert {key.replace("test_", "eval_anli_", 1): value for key, value in test.items()} == {
        key: value for key, value in alone.items() if key.startswith("eval_anli_")
    }
    predicted = without_timings(trainer.predict(esnli).metrics)
    assert predicted == {
        key.replace("eval_esnli_", "test_", 1): value
        for key, value in alone.items()
        if key.startswith("eval_esnli_") and key.split("eval_esnli_")[1] in PER_SET[:5]
    }


def test_an_evaluation_after_training_does_not_replace_the_last_steps_diagrams(trained):
    trainer, callback, _, _, output_dir, during = trained
    assert set(during) == {
        f"{prefix}_step{step}.png" for prefix in ("eval_anli", "eval_esnli") for step in (1, 2, 3)
    }
    folder = os.path.join(output_dir, "reliability_diagrams")
    trainer.evaluate()  # global_step is still 3, but the weights are the best checkpoint's
    assert {name: digest(os.path.join(folder, name)) for name in during} == during
    for prefix in ("eval_anli", "eval_esnli"):
        written = os.path.basename(callback.last_plots[prefix])
        assert written not in during and written.startswith(f"{prefix}_step3")
        assert os.path.isfile(os.path.join(folder, written))


def test_set_names_that_differ_only_in_unsafe_characters_get_diagrams_of_their_own(tmp_path):
    tokenizer = make_tokenizer()
    model = build_tiny_seq2seq(tokenizer, "t5", d_model=16, num_layers=1, num_heads=2, d_ff=32)
    trainer = SimpleNamespace(
        model=model,
        processing_class=tokenizer,
        args=training_arguments(tmp_path),
        state=SimpleNamespace(global_step=5),
        is_world_process_zero=lambda: True,
    )
    callback = ECECallback(n_bins=5, label_candidates=CANDIDATES)
    first, second = tokenise(make_records(4, seed=3), tokenizer), tokenise(make_records(5, seed=4), tokenizer)
    callback.evaluation_metrics(trainer, first, "eval_anli r1")
    callback.evaluation_metrics(trainer, second, "eval_anli/r1")
    paths = {callback.last_plots["eval_anli r1"], callback.last_plots["eval_anli/r1"]}
    assert len(paths) == 2 and all(os.path.isfile(path) for path in paths)
    assert {os.path.basename(path) for path in paths} == {
        "eval_anli_r1_step5.png",
        "eval_anli_r1_step5_2.png",
    }
