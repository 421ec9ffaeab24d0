"""A file or folder option whose value starts with ``~`` starts in the home folder, in every spelling the
shell leaves the ``~`` in (``--option=~/x``, a ``--config`` file), for every command; other options keep it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_cotmi.cli import _parse, main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home folder of its own (``~`` expands through $HOME) and a working folder apart from it."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return folder


def parsed_value(command: str, argv: list[str], name: str) -> object:
    """The value of field ``name`` in whichever argument class of ``command`` has it."""
    values = [getattr(group, name) for group in _parse(command, argv) if hasattr(group, name)]
    assert len(values) == 1, f"{name} found {len(values)} times"
    return values[0]


PATH_OPTIONS = [
    ("train", "--output-dir", "output_dir"),
    ("train", "--train-file", "train_file"),
    ("train", "--validation-file", "validation_file"),
    ("train", "--data-dir", "data_dir"),
    ("train", "--model", "model_name_or_path"),
    ("train", "--tokenizer-name-or-path", "tokenizer_name_or_path"),
    ("train", "--resume-from-checkpoint", "resume_from_checkpoint"),
    ("demo", "--output-dir", "output_dir"),
    ("evaluate", "--model", "model_name_or_path"),
    ("evaluate", "--base-model", "base_model_name_or_path"),
    ("evaluate", "--test-file", "test_file"),
    ("evaluate", "--output-file", "output_file"),
    ("evaluate", "--plot-file", "plot_file"),
    ("predict", "--model", "model_name_or_path"),
    ("predict", "--base-model", "base_model_name_or_path"),
    ("predict", "--input-file", "input_file"),
    ("predict", "--output-file", "output_file"),
    ("generate-rationales", "--input-file", "input_file"),
    ("generate-rationales", "--output-file", "output_file"),
    ("generate-rationales", "--rejects-file", "rejects_file"),
    ("generate-rationales", "--template-file", "template_file"),
    ("generate-rationales", "--chat-template-file", "chat_template_file"),
    ("generate-rationales", "--teacher-model", "teacher_model"),
]


@pytest.mark.parametrize("command,flag,name", PATH_OPTIONS)
def test_a_tilde_after_the_equals_sign_is_the_home_folder(home, command, flag, name):
    value = parsed_value(command, [f"{flag}=~/runs/x.jsonl"], name)  # generate-rationales wants .jsonl
    assert str(value) == str(home / "runs" / "x.jsonl")


def test_a_tilde_in_a_config_file_is_the_home_folder(home):
    (home / "run.yaml").write_text("output_dir: ~/runs/t5\ntrain_file: ~/data/train.jsonl\n")
    # the config file itself given as --config=~/run.yaml: read from the home folder
    assert parsed_value("train", ["--config=~/run.yaml"], "output_dir") == str(home / "runs" / "t5")
    assert parsed_value("train", ["--config=~/run.yaml"], "train_file") == str(home / "data" / "train.jsonl")


def test_other_options_and_texts_keep_their_tilde(home):
    assert parsed_value("train", ["--run-name=~x"], "run_name") == "~x"
    assert parsed_value("train", ["--input-column=~q"], "input_column") == "~q"
    assert parsed_value("predict", ["~/not a path"], "texts") == ["~/not a path"]
    assert parsed_value("train", ["--output-dir=runs/~x"], "output_dir") == "runs/~x"  # only a leading ~


def test_predict_output_file_with_a_tilde_makes_no_folder_named_tilde(home, capsys):
    # the output file's folder is made before the model loads (which fails here)
    status = main(["predict", f"--model={home / 'no-such-model'}", "--output-file=~/preds/p.jsonl", "hi"])
    assert status != 0 and "error" in capsys.readouterr().err
    assert not (Path.cwd() / "~").exists()
    assert (home / "preds").is_dir()
