"""The model card: the callback fills the card data as training runs, the template ships in the package,
and the rendered card's metadata parses with ``huggingface_hub.ModelCard``."""

from __future__ import annotations

import configparser
import contextlib
import copy
import fnmatch
import io
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from transformers import TrainerCallback

import hf_cotmi
from hf_cotmi import DSSMITrainer, DSSMITrainingArguments, build_tiny_seq2seq
from hf_cotmi.model_card import (
    MAX_TRAINING_ROWS,
    DSSModelCardCallback,
    DSSModelCardData,
    Paper,
    model_card_template_path,
    render_model_card,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "templates/model_card_template.md"


def arguments(tmp_path: Path, **overrides) -> DSSMITrainingArguments:
    values = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=4,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        gradient_accumulation_steps=2,
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        learning_rate=2e-3,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        seed=3,
        disable_tqdm=True,
    )
    values.update(overrides)
    return DSSMITrainingArguments(**values)


class CardProbe(TrainerCallback):
    """Runs after the card callback and keeps a copy of the card data at each event, beside what the
    trainer logged or evaluated at that moment."""

    def __init__(self, card_callback: DSSModelCardCallback) -> None:
        self.card = card_callback.card_data
        self.at_train_begin: DSSModelCardData | None = None
        self.logs: list[tuple[int, dict, DSSModelCardData]] = []
        self.evaluations: list[tuple[int, dict, DSSModelCardData]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.at_train_begin = copy.deepcopy(self.card)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs), copy.deepcopy(self.card)))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.evaluations.append((state.global_step, dict(metrics), copy.deepcopy(self.card)))


def trained(tmp_path, tiny_tokenizer, tiny_features, **overrides):
    trainer = DSSMITrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5"),
        args=arguments(tmp_path, **overrides),
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
        eval_dataset=tiny_features.select(range(8)),
    )
    probe = CardProbe(trainer.model_card_callback)
    trainer.add_callback(probe)  # after the card callback, which the trainer registered itself
    trainer.train()
    return trainer, probe


def test_the_trainer_registers_the_card_callback(tmp_path, tiny_tokenizer):
    trainer = DSSMITrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5"),
        args=arguments(tmp_path),
        processing_class=tiny_tokenizer,
    )
    registered = [c for c in trainer.callback_handler.callbacks if isinstance(c, DSSModelCardCallback)]
    assert registered == [trainer.model_card_callback]
    card = trainer.model_card_callback.card_data
    assert card.hyperparameters == {} and card.training_logs == [] and card.metrics == {}
    assert card.loss_settings["mi_loss_weight"] == 0.1 and card.predict_prefix == "predict: "


def test_callback_fills_hyperparameters_losses_and_metrics_as_training_runs(
    tmp_path, tiny_tokenizer, tiny_features
):
    trainer, probe = trained(
        tmp_path, tiny_tokenizer, tiny_features, eval_strategy="steps", eval_steps=2, mi_loss_weight=0.3,
        mi_variant="masked",
    )  # fmt: skip

    # train begin: the hyperparameters and loss settings, no losses or metrics yet
    begin = probe.at_train_begin
    assert begin.hyperparameters == {
        "learning_rate": 2e-3,
        "train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "total_train_batch_size": 8,
        "max_steps": 4,
        "seed": 3,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
    }
    assert begin.loss_settings["mi_loss_weight"] == 0.3 and begin.loss_settings["mi_variant"] == "masked"
    assert begin.training_logs == [] and begin.metrics == {}

    # on log: the row of that step holds the logged loss and its three components
    training_logs = [(step, logs, card) for step, logs, card in probe.logs if "loss" in logs]
    assert [step for step, _, _ in training_logs] == [1, 2, 3, 4]
    for step, logs, card in training_logs:
        row = card.training_logs[-1]
        assert row["step"] == step and row["epoch"] == pytest.approx(logs["epoch"], abs=1e-4)
        for key in ("loss", "loss_label", "loss_rationale", "loss_mi"):
            assert row[key] == pytest.approx(logs[key], rel=1e-12), (step, key)
        assert "learning_rate" not in row and "grad_norm" not in row

    # on evaluate: every eval_ metric (not the runtimes), and eval_loss in the row of that step
    assert [step for step, _, _ in probe.evaluations] == [2, 4]
    for step, metrics, card in probe.evaluations:
        for key in ("eval_loss", "eval_loss_label", "eval_loss_rationale", "eval_loss_mi"):
            assert card.metrics[key] == pytest.approx(metrics[key], rel=1e-12), (step, key)
        assert not any(key.endswith(("_runtime", "_per_second")) for key in card.metrics)
        row = next(r for r in card.training_logs if r["step"] == step)
        assert row["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-12)

    # the card written at the end shows the same numbers
    trainer.create_model_card(model_name="tiny-student")
    text = (tmp_path / "out" / "README.md").read_text()
    assert "| `total_train_batch_size` | 8 |" in text and "| `lr_scheduler` | constant |" in text
    table = text.split("## Training results")[1].split("## Evaluation results")[0]
    assert "| step | epoch | loss | loss_label | loss_rationale | loss_mi | eval_loss |" in table
    rows = [line for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 4
    last_logs = training_logs[-1][1]
    cells = rows[-1].strip("|").split("|")
    assert int(cells[0]) == 4 and float(cells[2]) == pytest.approx(last_logs["loss"], abs=1e-6)
    assert float(cells[5]) == pytest.approx(last_logs["loss_mi"], abs=1e-6)
    assert float(cells[6]) == pytest.approx(probe.evaluations[-1][1]["eval_loss"], abs=1e-6)
    final_eval = probe.evaluations[-1][1]
    assert f"| `eval_loss_mi` | {round(final_eval['eval_loss_mi'], 6)} |" in text


def test_a_resumed_run_keeps_the_losses_of_the_steps_before_the_checkpoint(
    tmp_path, tiny_tokenizer, tiny_features
):
    settings = dict(save_strategy="steps", save_steps=2, gradient_accumulation_steps=1)
    full, _ = trained(tmp_path / "full", tiny_tokenizer, tiny_features, **settings)
    resumed = DSSMITrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5"),
        args=arguments(tmp_path / "resumed", **settings),
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "out" / "checkpoint-2"))
    before, after = full.model_card_callback.card_data, resumed.model_card_callback.card_data
    assert [row["step"] for row in after.training_logs] == [1, 2, 3, 4]
    for row_full, row_resumed in zip(before.training_logs, after.training_logs):
        assert row_resumed["loss_mi"] == pytest.approx(row_full["loss_mi"], rel=1e-5)


def test_with_load_best_model_at_end_the_card_lists_the_best_checkpoints_evaluation(
    tmp_path, tiny_tokenizer, tiny_features
):
    """The saved weights are the best checkpoint's, so the card's eval_* metrics must be that step's
    evaluation, not the last one's (which describes weights that were thrown away)."""
    trainer, probe = trained(
        tmp_path, tiny_tokenizer, tiny_features, eval_strategy="steps", eval_steps=1, save_strategy="steps",
        save_steps=1, load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=True,
        gradient_accumulation_steps=1, learning_rate=1e-2, predict_with_generate=False,
    )  # fmt: skip
    # greater_is_better on the loss: the best checkpoint is an early one, not the last
    evaluations = {step: metrics for step, metrics, _ in probe.evaluations}
    best_step = max(evaluations, key=lambda step: evaluations[step]["eval_loss"])
    assert best_step != max(evaluations) and trainer.state.best_model_checkpoint.endswith(f"-{best_step}")
    card = trainer.model_card_callback.card_data
    for key in ("eval_loss", "eval_loss_label", "eval_loss_rationale", "eval_loss_mi"):
        assert card.metrics[key] == pytest.approx(evaluations[best_step][key], rel=1e-12), key
    # the reference: evaluating the weights training left in the trainer (the best checkpoint's)
    trainer.create_model_card(model_name="tiny-student")
    reevaluated = trainer.evaluate()  # after the card was written
    written = {
        r.metric_name: r.metric_value
        for r in ModelCard.load(tmp_path / "out" / "README.md").data.eval_results
    }
    assert written["eval_loss"] == pytest.approx(reevaluated["eval_loss"], abs=1e-5)
    text = (tmp_path / "out" / "README.md").read_text()
    assert f"best checkpoint (step {best_step}, by `eval_loss`)" in text


def test_record_functions_keep_losses_and_metrics_and_skip_the_rest():
    card = DSSModelCardData("m")
    card.record_training_log({"loss": 1.5, "loss_label": 2.0, "grad_norm": 9.0}, step=5, epoch=0.25)
    card.record_training_log({"train_loss": 1.0, "train_runtime": 3.0}, step=5, epoch=0.25)  # the summary
    card.record_metrics(
        {"eval_loss": 1.25, "eval_accuracy": 0.5, "eval_runtime": 0.1, "epoch": 0.25}, 5, 0.25
    )
    card.record_metrics({"test_accuracy": 0.75, "test_samples_per_second": 9.0}, 5, 0.25)
    card.record_metrics({"eval_accuracy": 0.625}, 5, 0.25)  # a later evaluation replaces the value
    assert card.training_logs == [
        {"step": 5, "epoch": 0.25, "loss": 1.5, "loss_label": 2.0, "eval_loss": 1.25}
    ]
    assert card.metrics == {"eval_loss": 1.25, "eval_accuracy": 0.625, "test_accuracy": 0.75}


def test_long_training_histories_are_thinned_evenly_and_say_so():
    logs = [{"step": 10 * i, "epoch": i / 100, "loss": 1.0 / i} for i in range(1, 101)]
    text = render_model_card(DSSModelCardData("m", training_logs=logs))
    table = text.split("## Training results")[1].split("## Evaluation results")[0]
    steps = [int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)]
    assert len(steps) == MAX_TRAINING_ROWS and steps[0] == 10 and steps[-1] == 1000
    assert steps == sorted(set(steps))
    assert f"{MAX_TRAINING_ROWS} of 100 logged steps, evenly spaced." in table


# ------------------------------------------------------------------ the template in the package


def test_template_lives_in_the_package_and_setup_cfg_ships_it():
    path = model_card_template_path()
    assert path == Path(hf_cotmi.__file__).parent / TEMPLATE
    assert path.read_text().startswith("---\n{{ card_data }}\n---")
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["hf_cotmi"].replace("\n", ",").split(",")]
    assert any(fnmatch.fnmatch(TEMPLATE, p) for p in patterns if p), patterns


@pytest.mark.slow
def test_template_is_found_from_an_installed_wheel(tmp_path):
    """Build the wheel with the setuptools backend, unpack it (a pure-Python install) and render a card there."""
    setuptools = pytest.importorskip("setuptools")
    if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.skip(f"setuptools {setuptools.__version__} builds wheels only with the `wheel` package")
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT / "hf_cotmi", source / "hf_cotmi", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / name, source / name)
    build = "from setuptools import build_meta; import sys; print(build_meta.build_wheel(sys.argv[1]))"
    built = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")], cwd=source, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = tmp_path / "dist" / built.stdout.split()[-1]
    with zipfile.ZipFile(wheel) as archive:
        assert f"hf_cotmi/{TEMPLATE}" in archive.namelist()
        archive.extractall(tmp_path / "site")
    script = (
        "import hf_cotmi.model_card as m; "
        "print(m.model_card_template_path()); "
        "print(m.render_model_card(m.DSSModelCardData('student')).splitlines()[0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    path, first_line = done.stdout.splitlines()[:2]
    assert Path(path) == tmp_path / "site" / "hf_cotmi" / TEMPLATE
    assert first_line == "---"


def test_a_missing_template_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.md"):
        render_model_card(DSSModelCardData("m"), template_path=tmp_path / "nowhere.md")
    with pytest.raises(ValueError, match="model_name"):
        render_model_card(DSSModelCardData())


# ------------------------------------------------------------------ the rendered card


def test_rendered_metadata_parses_with_huggingface_hub(tmp_path):
    card = DSSModelCardData(
        "someone/t5-svamp",
        base_model="google-t5/t5-small",
        datasets=["svamp"],
        license="apache-2.0",
        language="en",
        extra_tags=["math", "hf-cotmi"],
        metrics={"eval_loss": 0.5, "test_accuracy": 0.625, "test_ece": 0.0625},
    )
    path = tmp_path / "README.md"
    path.write_text(render_model_card(card))
    loaded = ModelCard.load(path)  # raises if the YAML is not valid Hub metadata
    data = loaded.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text2text-generation"
    assert data.license == "apache-2.0" and data.language == "en"
    assert data.base_model == "google-t5/t5-small" and data.datasets == ["svamp"]
    assert data.tags == ["hf-cotmi", "distilling-step-by-step", "chain-of-thought-distillation", "math"]
    assert data.model_name == "someone/t5-svamp"
    results = {
        (r.metric_name, r.metric_type, r.dataset_name, r.dataset_split): r.metric_value
        for r in data.eval_results
    }
    # one result per split: the Hub shows validation and test figures apart
    assert results == {
        ("eval_loss", "loss", "svamp", "validation"): 0.5,
        ("test_accuracy", "accuracy", "svamp", "test"): 0.625,
        ("test_ece", "ece", "svamp", "test"): 0.0625,
    }
    # the front matter says exactly what the card data says
    front = yaml.safe_load(path.read_text().split("---\n")[1])
    assert front == card.metadata()
    assert front["metrics"] == ["accuracy", "ece", "loss"]


def test_without_metrics_or_datasets_the_metadata_still_parses():
    text = render_model_card(DSSModelCardData("student", metrics={"eval_accuracy": 1.0}))
    data = ModelCard(text).data
    assert [(r.dataset_name, r.metric_name, r.metric_value) for r in data.eval_results] == [
        ("unknown", "eval_accuracy", 1.0)
    ]
    bare = ModelCard(render_model_card(DSSModelCardData("student"))).data
    assert bare.eval_results is None and "No evaluation metrics were logged." in render_model_card(
        DSSModelCardData("student")
    )


def test_card_follows_the_trainer_class_attributes(tmp_path, tiny_tokenizer):
    paper = Paper(
        "My method (Doe, 2025)", "My method", "2501.00001", "@misc{doe2025mine,\n  title = {Mine}\n}"
    )

    class MyTrainer(DSSMITrainer):
        _tag_names = ["hf-cotmi", "my-method"]
        _papers = (paper,)

    trainer = MyTrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5"),
        args=arguments(tmp_path),
        processing_class=tiny_tokenizer,
    )
    assert "my-method" in trainer.model.model_tags
    trainer.create_model_card(model_name="mine", tags="extra")
    text = (tmp_path / "out" / "README.md").read_text()
    assert ModelCard(text).data.tags == ["hf-cotmi", "my-method", "extra"]
    assert "My method (Doe, 2025):\n\n```bibtex\n@misc{doe2025mine," in text
    assert "hsieh2023distilling" not in text and "chen2024learning" not in text
    # the default trainer cites both papers
    assert [p.arxiv_id for p in DSSMITrainer._papers] == ["2305.02301", "2403.03348"]


def test_causal_model_class_gives_a_snippet_that_runs(tmp_path, tiny_tokenizer):
    """A decoder-only student: the snippet loads it with AutoModelForCausalLM and drops the prompt."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tiny_tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=512,  # 256 new tokens fit
        bos_token_id=3, eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    folder = tmp_path / "causal"
    GPT2LMHeadModel(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    card = DSSModelCardData("someone/causal", model_class="AutoModelForCausalLM")
    text = render_model_card(card)
    assert ModelCard(text).data.pipeline_tag == "text-generation"
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "model = AutoModelForCausalLM.from_pretrained(" in snippet and "Seq2Seq" not in snippet
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(snippet.replace('"someone/causal"', repr(str(folder))), "card", "exec"), {})
    answer, rationale = output.getvalue().splitlines()[:2]
    assert answer.startswith("answer:") and rationale.startswith("rationale:")
    # the prompt ("predict: tom has 3 apples ...") is not part of the decoded answer
    assert "predict" not in answer and "tom has 3 apples" not in answer


@pytest.mark.parametrize("model_class", ["AutoModelForCausalLM", "AutoModelForSeq2SeqLM"])
def test_a_fine_tuning_cards_snippet_asks_for_no_rationale(tmp_path, tiny_tokenizer, model_class):
    """Standard fine-tuning never trained the explain task: its snippet generates the answer only, and runs."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "student"
    if model_class == "AutoModelForCausalLM":
        config = GPT2Config(
            vocab_size=len(tiny_tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=512,
            bos_token_id=3, eos_token_id=1, pad_token_id=0,
        )  # fmt: skip
        GPT2LMHeadModel(config).save_pretrained(folder)
    else:
        build_tiny_seq2seq(tiny_tokenizer, "t5").save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    settings = {"label_loss_weight": 1.0, "rationale_loss_weight": 0.0, "mi_loss_weight": 0.0}
    text = render_model_card(DSSModelCardData("someone/ft", model_class=model_class, loss_settings=settings))
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "explain" not in snippet and "rationale" not in snippet
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(snippet.replace('"someone/ft"', repr(str(folder))), "card", "exec"), {})
    assert [line.split(":")[0] for line in output.getvalue().splitlines()] == ["answer"]


@pytest.mark.parametrize("chat", [False, True])
def test_a_causal_cards_snippet_prompts_the_student_as_training_did(tmp_path, chat):
    """The word tokenizer ends every text with EOS and adds no BOS: tokenizer(text) is not the training
    prompt ([BOS] text); the snippet must build the prompt training used (or the chat-template turn)."""
    import copy as copying

    from hf_cotmi import build_tiny_causal_lm, build_word_tokenizer
    from hf_cotmi.causal_confidence import causal_prompts

    tok = build_word_tokenizer(
        ["tom has 3 apples and buys 4 more . how many does he have ?", "user assistant eot"]
    )
    if chat:
        tok.chat_template = (
            "{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} eot {% endfor %}"
            "{% if add_generation_prompt %}assistant : {% endif %}"
        )
    model = build_tiny_causal_lm(tok, "llama", hidden_size=16, num_layers=1, num_heads=2)
    folder = tmp_path / "causal"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    trainer = DSSMITrainer(
        model=model, args=DSSMITrainingArguments(str(tmp_path / "out"), report_to="none", use_cpu=True),
        processing_class=tok,
    )  # fmt: skip
    card = copying.deepcopy(trainer.model_card_callback.card_data)
    card.chat_template = chat
    card.model_name = "someone/causal"
    assert card.prompt_start_ids == [tok.bos_token_id]
    snippet = re.search(r"```python\n(.*?)```", render_model_card(card), re.S).group(1)
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(snippet.replace('"someone/causal"', repr(str(folder))), "card", "exec"), namespace)
    text = "predict: " + namespace["question"]
    expected = causal_prompts(tok, [text], chat_template=chat)[0]
    assert namespace["prompt"](text)[0].tolist() == expected
    assert tok(text)["input_ids"] != expected  # the naive tokenisation the snippet used to show differs


def test_adapters_loaded_through_transformers_give_a_peft_card(tmp_path, tiny_tokenizer):
    """A transformers model with adapters loaded (from_pretrained of an adapter folder) saves only the adapters,
    as a PeftModel does: both cards say library_name peft; a plain model's says transformers."""
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForSeq2SeqLM

    build_tiny_seq2seq(tiny_tokenizer, "t5").save_pretrained(tmp_path / "base")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM")
    wrapped = peft.get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "base"), config)
    wrapped.save_pretrained(tmp_path / "adapters")
    students = {
        "peft": wrapped,
        "loaded": AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "adapters"),
        "plain": AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "base"),
    }
    for name, model in students.items():
        trainer = DSSMITrainer(model=model, args=arguments(tmp_path / name), processing_class=tiny_tokenizer)
        expected = "transformers" if name == "plain" else "peft"
        assert trainer.model_card_data().library_name == expected, name
        assert ModelCard(render_model_card(trainer.model_card_data())).data.library_name == expected, name
