"""Batch layouts that must train alike: 1 process x 4 examples, 2 processes x 2, 2 processes x 1 x 2 accumulation
steps (torchrun, gloo, CPU); and FSDP, which accelerate does not run on the CPU, refused rather than replaced.

The layout runs use plain SGD, so the weights after two steps are the initial weights minus the learning rate
times the gradients: equal weights mean equal gradients. (AdamW divides each gradient by its own running
magnitude, so a gradient entry at float-rounding level, e.g. T5's, becomes a full learning-rate step whose sign
is noise: AdamW weights of T5 differed by 8.5e-5 between layouts whose SGD weights agree to 3e-8.)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_ddp import _run, _torchrun

from hf_cotmi import DSSMITrainingArguments
from hf_cotmi.teacher.serve import free_local_port

LAYOUT_SCRIPT = Path(__file__).parent / "scripts" / "ddp_train_layouts.py"
CAUSAL_SCRIPT = Path(__file__).parent / "scripts" / "ddp_train_causal.py"
LOGGED = ("loss", "loss_label", "loss_rationale", "loss_mi", "grad_norm")
SGD = ("--optim", "sgd", "--learning-rate", "0.1")


@pytest.fixture(scope="module")
def single_runs() -> dict[tuple[str, ...], Path]:
    """One-process runs (batch 4), made when a test first needs one and shared by the tests of this module."""
    return {}


def one_process(single_runs: dict, tmp_path_factory, *options: str) -> Path:
    """The output folder of ``ddp_train_layouts.py`` as one process with batch 4 and ``options``."""
    if options not in single_runs:
        folder = tmp_path_factory.mktemp("single")
        _run([sys.executable, str(LAYOUT_SCRIPT), str(folder / "out"), "4", *SGD, *options], folder)
        single_runs[options] = folder / "out"
    return single_runs[options]


def two_processes(tmp_path: Path, per_device: int, *options: str) -> Path:
    """The output folder of ``ddp_train_layouts.py`` under ``torchrun --nproc_per_node 2``."""
    command = [_torchrun(), "--nproc_per_node", "2", "--master_port", str(free_local_port()), str(LAYOUT_SCRIPT),
               str(tmp_path / "multi"), str(per_device), *SGD, *options]  # fmt: skip
    _run(command, tmp_path)
    return tmp_path / "multi"


def assert_same_training(one: Path, two: Path, weight_tolerance: float = 1e-6) -> None:
    """Both runs logged the same two steps and ended with the same weights, which moved from where they began."""
    one_record = json.loads((one / "log_history.json").read_text())
    two_record = json.loads((two / "log_history.json").read_text())
    assert one_record["world_size"] == 1 and two_record["world_size"] == 2
    one_steps = [e for e in one_record["log_history"] if "loss" in e]
    two_steps = [e for e in two_record["log_history"] if "loss" in e]
    assert len(one_steps) == len(two_steps) == 2
    for step, (a, b) in enumerate(zip(one_steps, two_steps), start=1):
        for key in LOGGED:
            assert math.isclose(a[key], b[key], rel_tol=1e-5), (step, key, a[key], b[key])
    one_weights = torch.load(one / "weights.pt")
    two_weights = torch.load(two / "weights.pt")
    assert one_weights.keys() == two_weights.keys()
    for name, weight in one_weights.items():
        difference = (weight - two_weights[name]).abs().max().item()
        assert difference <= weight_tolerance, (name, difference)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["masked", "paper"])
def test_two_process_ddp_of_a_causal_student_matches_one_process_in_losses_and_weights(
    single_runs, tmp_path_factory, tmp_path, variant
):
    """Llama, 2 processes x 2 examples against 1 x 4. ``paper`` reduces the MI term over the padding after the
    targets as well, so in general it moves with the layout (docs/guides/distributed.md); on this data the
    padding holds no maximum that changes the loss, and the gradients agree to float rounding."""
    options = ("--student", "llama", "--mi-variant", variant)
    one = one_process(single_runs, tmp_path_factory, *options)
    assert_same_training(one, two_processes(tmp_path, 2, *options))


@pytest.mark.slow
@pytest.mark.parametrize("student", ["llama", "t5"])
def test_gradient_accumulation_under_ddp_matches_one_process(
    single_runs, tmp_path_factory, tmp_path, student
):
    """2 processes x 1 example x 2 accumulation steps against 1 process x 4 examples: the token-count and
    example normalisation span every micro-batch of every process."""
    options = ("--student", student, "--mi-variant", "masked")
    one = one_process(single_runs, tmp_path_factory, *options)
    two = two_processes(tmp_path, 1, *options, "--accumulation", "2")
    assert json.loads((two / "log_history.json").read_text())["accumulation"] == 2
    assert_same_training(one, two)


@pytest.mark.slow
def test_the_layout_weights_really_move(single_runs, tmp_path_factory):
    """Guard for ``assert_same_training``: SGD at 0.1 moves the weights by far more than its 1e-6 tolerance."""
    from tiny_task import make_tokenizer

    from hf_cotmi import build_tiny_causal_lm

    one = one_process(single_runs, tmp_path_factory, "--student", "llama", "--mi-variant", "masked")
    start = build_tiny_causal_lm(make_tokenizer(), "llama", seed=11).state_dict()
    trained = torch.load(one / "weights.pt")
    assert max((trained[name] - start[name]).abs().max().item() for name in start) > 1e-2


# ---------------------------------------------------------------- FSDP on the CPU

FSDP = {"fsdp": True, "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}}


def test_fsdp_on_the_cpu_is_refused_rather_than_trained_as_ddp(tmp_path):
    """accelerate turns its FSDP plugin on only for GPU-class devices: with ``use_cpu`` the Trainer would train
    every process with a whole copy of the model (DDP) and say nothing."""
    with pytest.raises(ValueError, match=r"fsdp=True.*use_cpu=True.*accelerate.*GPU") as refused:
        DSSMITrainingArguments(str(tmp_path), use_cpu=True, report_to="none", **FSDP)
    assert "DDP" in str(refused.value)


def test_fsdp_on_a_machine_without_an_accelerator_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("hf_cotmi.arguments._accelerator_available", lambda: False)
    with pytest.raises(ValueError, match=r"fsdp=True.*no GPU or other accelerator"):
        DSSMITrainingArguments(str(tmp_path), report_to="none", **FSDP)


def test_a_legacy_fsdp_string_on_the_cpu_is_refused_too(tmp_path):
    with pytest.raises(ValueError, match="fsdp"):
        DSSMITrainingArguments(str(tmp_path), use_cpu=True, report_to="none", fsdp="full_shard auto_wrap")


def test_fsdp_is_accepted_where_an_accelerator_runs_it(tmp_path, monkeypatch):
    monkeypatch.setattr("hf_cotmi.arguments._accelerator_available", lambda: True)
    args = DSSMITrainingArguments(str(tmp_path), report_to="none", **FSDP)
    assert args.fsdp and args.fsdp_config["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]


@pytest.mark.slow
def test_two_cpu_processes_asked_for_fsdp_stop_before_training(tmp_path):
    """Under torchrun (2 processes, gloo) the FSDP request stops both processes at the arguments, naming why."""
    command = [_torchrun(), "--nproc_per_node", "2", "--master_port", str(free_local_port()), str(CAUSAL_SCRIPT),
               str(tmp_path / "out"), "2", "fsdp"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "fsdp=True" in result.stderr and "accelerate" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "out" / "log_history.json").exists()
