"""Arguments are checked up front: a ValueError names the field; a bad YAML value names the file and key."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback
from transformers.utils import is_torch_bf16_gpu_available

from hf_cotmi import DSSMITrainer, DSSMITrainingArguments, build_tiny_seq2seq
from hf_cotmi.cli import main


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"max_steps": 0}, r"max_steps .*got 0 \(0 steps would train nothing\)"),
        ({"max_steps": -3}, "max_steps"),
        ({"num_train_epochs": 0}, "num_train_epochs"),
        ({"num_train_epochs": float("inf")}, "num_train_epochs"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be an integer >= 1, got 0"),
        ({"per_device_eval_batch_size": 0}, "per_device_eval_batch_size"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"mi_loss_weight": float("inf")}, "mi_loss_weight must be a finite non-negative number, got inf"),
        ({"label_loss_weight": float("-inf")}, "label_loss_weight"),
        ({"rationale_loss_weight": True}, "rationale_loss_weight"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"max_grad_norm": float("nan")}, "max_grad_norm"),
        ({"label_smoothing_factor": 0.1}, r"label_smoothing_factor=0\.1 would be ignored"),
        (
            {"output_rationale": True, "predict_with_generate": False},
            "output_rationale=True needs predict_with",
        ),
    ],
)
def test_values_that_cannot_train_are_refused_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSSMITrainingArguments("out", report_to="none", **kwargs)


def test_options_the_trainer_would_ignore_are_refused(tiny_tokenizer, tmp_path):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    out = str(tmp_path / "out")  # a trainer makes its output folder
    plain = DSSMITrainingArguments(out, report_to="none", predict_with_generate=False, use_cpu=True)
    with pytest.raises(ValueError, match="compute_metrics needs predict_with_generate=True"):
        DSSMITrainer(model=model, args=plain, processing_class=tiny_tokenizer, compute_metrics=lambda p: {})
    args = DSSMITrainingArguments(out, report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match="compute_loss_func is not used by DSSMITrainer"):
        DSSMITrainer(
            model=model, args=args, processing_class=tiny_tokenizer, compute_loss_func=lambda *a, **k: 0
        )
    assert DSSMITrainer(model=model, args=plain, processing_class=tiny_tokenizer).compute_metrics is None


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"label_loss_weight": -0.5}, "label_loss_weight must be a finite non-negative number, got -0.5"),
        ({"mi_loss_weight": float("nan")}, "mi_loss_weight must be a finite non-negative number, got nan"),
        (
            {"label_loss_weight": 0, "rationale_loss_weight": 0, "mi_loss_weight": 0},
            "label_loss_weight, rationale_loss_weight and mi_loss_weight are all 0",
        ),
    ],
)
def test_loss_weights_changed_after_construction_are_refused_before_training(
    changes, match, tmp_path, tiny_tokenizer, tiny_features
):
    """``args.mi_loss_weight = w`` (a sweep, an ablation) skips ``__post_init__``: a negative weight would
    maximise its loss and all-zero weights train nothing, silently. ``train()`` checks again, before a step."""
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    before = [parameter.detach().clone() for parameter in model.parameters()]
    args = DSSMITrainingArguments(
        str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to="none", use_cpu=True,
        save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = DSSMITrainer(
        model=model, args=args, processing_class=tiny_tokenizer, train_dataset=tiny_features
    )
    for name, value in changes.items():
        setattr(trainer.args, name, value)
    with pytest.raises(ValueError, match=match):
        trainer.train()
    assert trainer.state.global_step == 0
    assert all(torch.equal(old, new) for old, new in zip(before, model.parameters()))


def test_positive_max_steps_and_epoch_training_are_accepted():
    assert DSSMITrainingArguments("out", report_to="none", max_steps=1).max_steps == 1
    assert DSSMITrainingArguments("out", report_to="none", num_train_epochs=0.5).max_steps == -1


@pytest.mark.parametrize("name", ["fp16", "fp16_full_eval"])
def test_fp16_on_the_cpu_is_refused_and_names_what_to_use_instead(name):
    with pytest.raises(ValueError, match=rf"{name}=True cannot take effect.*use_cpu=True is set.*bf16=True"):
        DSSMITrainingArguments("out", report_to="none", use_cpu=True, **{name: True})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_fp16_without_any_accelerator_is_refused():
    with pytest.raises(ValueError, match="this machine has no GPU or other accelerator"):
        DSSMITrainingArguments("out", report_to="none", fp16=True)


@pytest.mark.skipif(is_torch_bf16_gpu_available(), reason="needs a machine without a bfloat16 GPU")
def test_bf16_without_use_cpu_on_a_cpu_machine_says_to_add_use_cpu():
    with pytest.raises(ValueError, match=r"bf16=True: .*add use_cpu=True \(--use_cpu\)"):
        DSSMITrainingArguments("out", report_to="none", bf16=True)


class OutputDtype(TrainerCallback):
    def __init__(self, model):
        self.dtypes = set()
        module = model.lm_head
        module.register_forward_hook(lambda m, i, o: self.dtypes.add(o.dtype) if m.training else None)


def test_bf16_on_the_cpu_takes_effect(tmp_path, tiny_tokenizer, tiny_features):
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    probe = OutputDtype(model)
    args = DSSMITrainingArguments(
        str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to="none", use_cpu=True,
        bf16=True, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    DSSMITrainer(model=model, args=args, processing_class=tiny_tokenizer, train_dataset=tiny_features).train()
    assert probe.dtypes == {torch.bfloat16}


# ------------------------------------------------------------------------------------- YAML config


def run_with_config(tmp_path, capsys, text):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    code = main(["train", "--config", str(config), "--dataset", "svamp", "--output-dir", str(tmp_path)])
    return code, capsys.readouterr().err.strip(), str(config)


@pytest.mark.parametrize(
    "line,expected",
    [
        ("max_steps: 2.5", "'max_steps' must be an integer; got 2.5 (float)"),
        ("max_steps: ten", "'max_steps' must be an integer; got 'ten' (str)"),
        (
            "per_device_train_batch_size: [4]",
            "'per_device_train_batch_size' must be an integer; got [4] (list)",
        ),
        ("learning_rate: fast", "'learning_rate' must be a number; got 'fast' (str)"),
        ("mi_loss_weight: true", "'mi_loss_weight' must be a number; got True (bool)"),
        ("use_cpu: 3", "'use_cpu' must be true or false; got 3 (int)"),
        ("mi_variant: 7", "'mi_variant' must be one of paper, masked; got 7 (int)"),
        ("optim: sgdd", "'optim' must be one of adamw_torch, "),
        (
            "output_dir: 12",
            "'output_dir' must be text; got 12 (int) (quote it in the YAML file to give text)",
        ),
        ("max_steps: null", "'max_steps' must be an integer; got None (NoneType)"),
        ("lora_target_modules: [q, 1]", "'lora_target_modules' must be text; got 1 (int)"),
        # a mapping is taken only by a field that takes one (lr_scheduler_kwargs), not by a text field
        ("model: {name: t5-small}", "'model' must be text; got {'name': 't5-small'} (dict)"),
        ("optim_args: {lr: 1}", "'optim_args' must be text; got {'lr': 1} (dict)"),
        ("debug: true", "'debug' must be one of underflow_overflow, tpu_metrics_debug; got True (bool)"),
        ("generation_config: 3", "'generation_config' must be text; got 3 (int)"),
        # path options take a file or its JSON text; their ~-expanding type still reads as text
        ("deepspeed: 5", "'deepspeed' must be a mapping or its JSON text; got 5 (int)"),
        ("fsdp_config: [1, 2]", "'fsdp_config' must be a mapping or its JSON text; got [1, 2] (list)"),
        ("accelerator_config: 5", "'accelerator_config' must be a mapping or its JSON text; got 5 (int)"),
    ],
)
def test_wrong_types_in_a_config_file_name_the_file_and_key(tmp_path, capsys, line, expected):
    code, err, path = run_with_config(tmp_path, capsys, line + "\n")
    assert code == 2
    assert f"--config {path!r}: {expected}" in err
    assert len(err.splitlines()) == 1


def test_config_values_are_typed_as_on_the_command_line(tmp_path):
    from hf_cotmi.cli import _parse

    config = tmp_path / "run.yaml"
    config.write_text(
        "learning_rate: 1e-3\nmax_steps: '7'\nmi_loss_weight: 1\nuse_cpu: 'yes'\nlr_scheduler_kwargs: {a: 1}\n"
    )
    *_, training_args, _ = _parse("train", ["--config", str(config)])
    assert training_args.learning_rate == pytest.approx(1e-3) and training_args.max_steps == 7
    assert isinstance(training_args.mi_loss_weight, float) and training_args.mi_loss_weight == 1.0
    assert training_args.use_cpu is True and training_args.lr_scheduler_kwargs == {"a": 1}
    # a field whose value may be a list though its flag takes one value (transformers' report_to)
    config.write_text("report_to: [tensorboard]\n")
    *_, training_args, _ = _parse("train", ["--config", str(config)])
    assert training_args.report_to == ["tensorboard"]
    config.write_text("report_to: [7]\n")
    with pytest.raises(Exception, match=r"'report_to' must be text; got 7 \(int\)"):
        _parse("train", ["--config", str(config)])


def test_a_predict_switch_in_a_config_file_is_read_as_a_boolean(tmp_path):
    from hf_cotmi.cli import _parse

    config = tmp_path / "predict.yaml"
    for text, expected in (("jsonl: 'false'\n", False), ("jsonl: 'yes'\n", True), ("jsonl: false\n", False)):
        config.write_text(text)
        *_, extra = _parse("predict", ["--config", str(config), "a text"])
        assert extra.jsonl is expected, text
    config.write_text("jsonl: 2\n")
    with pytest.raises(Exception, match=r"'jsonl' must be true or false; got 2 \(int\)"):
        _parse("predict", ["--config", str(config), "a text"])


@pytest.mark.parametrize(
    "text,expected",
    [
        ("max_steps: 7\nmax_steps: 8\n", "key 'max_steps' is given twice (lines 1 and 2)"),
        ("lr_scheduler_kwargs: {a: 1, a: 2}\n", "key 'a' is given twice (lines 1 and 1)"),
        ("max-steps: 7\nmax_steps: 8\n", "'max-steps' and 'max_steps' both set max_steps"),
        ("model: a\nmodel_name_or_path: b\n", "'model' and 'model_name_or_path' both set model_name_or_path"),
    ],
)
def test_an_option_given_twice_in_a_config_file_is_refused(tmp_path, capsys, text, expected):
    code, err, path = run_with_config(tmp_path, capsys, text)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"--config {path!r}: {expected}" in err


def test_a_yaml_merge_key_is_not_a_duplicate(tmp_path):
    from hf_cotmi.cli import _parse

    config = tmp_path / "run.yaml"
    config.write_text("lr_scheduler_kwargs: {<<: {a: 1, b: 2}, b: 3}\n")
    *_, training_args, _ = _parse("train", ["--config", str(config)])
    assert training_args.lr_scheduler_kwargs == {"a": 1, "b": 3}


def test_two_config_files_are_refused_rather_than_one_ignored(tmp_path, capsys):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("max_steps: 5\n")
    second.write_text("learning_rate: 1e-3\n")
    code = main(["train", "--config", str(first), f"--config={second}", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"--config is given twice ({str(first)!r} and {str(second)!r}): only one file is read" in err
    from hf_cotmi.cli import _parse

    *_, training_args, common = _parse("train", ["--config", str(first), "--config", str(first)])
    assert training_args.max_steps == 5 and common.config == str(first)  # the same file twice is one file
