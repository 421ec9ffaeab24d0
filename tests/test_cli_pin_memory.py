"""``hf-cotmi train`` on a machine without an accelerator leaves ``dataloader_pin_memory`` off (torch would
warn that pinned memory needs one), unless the user sets it; with an accelerator the default stays on."""

from __future__ import annotations

import warnings

import pytest
from cli_runs import run

from hf_cotmi import cli
from hf_cotmi.cli import train_arguments

DATA = ["--dataset", "synthetic", "--output-dir", "unused"]


def pin_memory(argv: list[str]) -> bool:
    return train_arguments([*DATA, *argv])[3].dataloader_pin_memory


def test_without_an_accelerator_pinned_memory_is_off_unless_asked_for(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "accelerator_available", lambda: False)
    assert pin_memory([]) is False
    assert pin_memory(["--dataloader-pin-memory", "true"]) is True
    assert pin_memory(["--dataloader-pin-memory"]) is True
    config = tmp_path / "options.yaml"
    config.write_text("dataloader_pin_memory: true\n")
    assert pin_memory(["--config", str(config)]) is True


def test_with_an_accelerator_the_transformers_default_stays(monkeypatch):
    monkeypatch.setattr(cli, "accelerator_available", lambda: True)
    assert pin_memory([]) is True
    assert pin_memory(["--dataloader-pin-memory", "false"]) is False


def test_accelerator_available_follows_torch():
    import torch

    expected = (
        torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    )
    assert cli.accelerator_available() is bool(expected)


def test_a_train_run_on_cpu_prints_no_pin_memory_warning(tiny_student_dir, tmp_path, capsys):
    if cli.accelerator_available():
        pytest.skip("this machine has an accelerator: torch pins memory there without a warning")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run(
            capsys, "train", "--model", tiny_student_dir, "--dataset", "synthetic", "--synthetic-train-size", "8",
            "--synthetic-test-size", "4", "--max-steps", "1", "--per-device-train-batch-size", "4",
            "--save-strategy", "no", "--report-to", "none", "--disable-tqdm", "true", "--generation-max-length",
            "4", "--rationale-max-new-tokens", "4", "--num-examples-to-show", "0",
            "--output-dir", str(tmp_path / "out"),
        )  # fmt: skip
    assert code == 0, err
    assert not [w for w in caught if "pin_memory" in str(w.message)], [str(w.message) for w in caught]
