"""``hf-cotmi train`` tokenises the validation split only when something evaluates it, and the calibration
pass of ``evaluate`` (and of ``train``'s final evaluation) shows a progress bar, which ``--disable-tqdm``
turns off. Each case runs through ``hf_cotmi.cli.main`` with the built-in tiny T5 (a few seconds each).
"""

from __future__ import annotations

import collections
import re

import pytest
from cli_runs import run

import hf_cotmi.data.features as features_module

TINY = [
    "--tiny-d-model", "16", "--tiny-num-layers", "1", "--tiny-num-heads", "2", "--tiny-d-ff", "32",
    "--per-device-train-batch-size", "4", "--per-device-eval-batch-size", "4", "--use-cpu",
    "--report-to", "none", "--generation-max-length", "4", "--rationale-max-new-tokens", "4",
    "--num-examples-to-show", "0", "--max-steps", "2", "--logging-steps", "1", "--save-strategy", "no",
]  # fmt: skip


def synthetic(valid: int, test: int) -> list[str]:
    return [
        "--dataset", "synthetic", "--synthetic-train-size", "8", "--synthetic-valid-size", str(valid),
        "--synthetic-test-size", str(test),
    ]  # fmt: skip


def calibration_bar(err: str, split: str) -> list[str]:
    """The renders of the calibration pass's progress bar over ``split`` in standard error."""
    return re.findall(rf"{split}: sequence confidence:\s+\d+%\|.*?\| *\d+/\d+", err)


@pytest.fixture
def tokenised_rows(monkeypatch) -> collections.Counter:
    """Rows that ``prepare_dss_features`` tokenises, by split name, while the test runs."""
    counted: collections.Counter = collections.Counter()
    prepare = features_module.prepare_dss_features

    def counting(data, *args, **kwargs):
        for split, dataset in data.items():
            counted[split] += dataset.num_rows
        return prepare(data, *args, **kwargs)

    monkeypatch.setattr(features_module, "prepare_dss_features", counting)
    return counted


# --------------------------------------------------------------------------------- validation features


def test_train_without_evaluation_during_training_does_not_tokenise_the_validation_split(
    tokenised_rows, tmp_path, capsys
):
    code, out, err = run(
        capsys, "train", *synthetic(valid=12, test=4), *TINY, "--disable-tqdm",
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    assert dict(tokenised_rows) == {"train": 8, "test": 4}
    # the split is still loaded and reported as data; only its features are not built
    assert "data: synthetic-arithmetic-cot (train 8, eval 12, test 4 examples" in out
    assert "test: accuracy " in out


@pytest.mark.parametrize(
    "evaluation, test_size, final_split",
    [
        (["--eval-strategy", "steps", "--eval-steps", "2"], 4, "test"),  # evaluated during training
        ([], 0, "valid"),  # no test split: the final evaluation measures the validation split
    ],
)
def test_train_tokenises_the_validation_split_when_something_evaluates_it(
    evaluation, test_size, final_split, tokenised_rows, tmp_path, capsys
):
    code, out, err = run(
        capsys, "train", *synthetic(valid=12, test=test_size), *TINY, "--disable-tqdm", *evaluation,
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    assert tokenised_rows["eval"] == 12
    assert len(re.findall(r"^  eval at step 2: ", out, flags=re.MULTILINE)) == (1 if evaluation else 0)
    assert f"{final_split}: accuracy " in out


# ------------------------------------------------------------------------------------------- progress


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> str:
    from hf_cotmi.cli import main

    out = tmp_path_factory.mktemp("trained") / "out"
    assert (
        main(["train", *synthetic(valid=0, test=9), *TINY, "--disable-tqdm", "--output-dir", str(out)]) == 0
    )
    return str(out)


def test_evaluate_shows_a_progress_bar_over_the_examples_it_scores(trained_dir, capsys):
    code, out, err = run(capsys, "evaluate", "--model", trained_dir, "--batch-size", "4")
    assert code == 0, err
    renders = calibration_bar(err, "test")
    assert renders, err
    assert all(render.endswith("/9") for render in renders), renders  # counts the 9 examples
    assert "synthetic-arithmetic-cot test (9 examples" in out


def test_evaluate_disable_tqdm_turns_the_progress_bar_off(trained_dir, capsys):
    code, out, err = run(capsys, "evaluate", "--model", trained_dir, "--disable-tqdm")
    assert code == 0, err
    assert "sequence confidence" not in err and "%|" not in err, err
    assert "synthetic-arithmetic-cot test (9 examples" in out


@pytest.mark.parametrize("disable_tqdm", [False, True])
def test_train_final_evaluation_shows_its_calibration_pass_unless_disable_tqdm(
    disable_tqdm, tmp_path, capsys
):
    switch = ["--disable-tqdm", "true" if disable_tqdm else "false"]
    code, out, err = run(
        capsys, "train", *synthetic(valid=0, test=9), *TINY, *switch, "--output-dir", str(tmp_path / "out")
    )
    assert code == 0, err
    assert bool(calibration_bar(err, "test")) is not disable_tqdm, err


def test_label_confidences_progress_bar_counts_every_example_and_is_off_by_default(monkeypatch, capsys):
    import tqdm.auto

    from hf_cotmi import build_tiny_seq2seq, build_word_tokenizer, label_confidences
    from hf_cotmi.prefixes import PREDICT_PREFIX

    texts = [f"a cat sleeps {i}" for i in range(7)]
    tokenizer = build_word_tokenizer([PREDICT_PREFIX + " ".join(texts), "yes no"])
    model = build_tiny_seq2seq(tokenizer, "t5")
    data = {"input": texts, "label": ["yes"] * 7}
    bars: list = []

    class RecordingBar(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    label_confidences(model, tokenizer, data, label_candidates=["yes", "no"], batch_size=3)
    assert all(bar.disable for bar in bars) and capsys.readouterr().err == ""
    bars.clear()
    label_confidences(
        model, tokenizer, data, label_candidates=["yes", "no"], batch_size=3, progress_bar="dev"
    )
    (bar,) = bars
    assert (bar.desc, bar.total, bar.n) == ("dev", 7, 7)
    assert "dev:" in capsys.readouterr().err


def _bar_settings() -> tuple[bool, bool, bool]:
    """Whether transformers', datasets' and huggingface_hub's progress bars are on."""
    import datasets
    import huggingface_hub.utils
    import transformers

    return (
        transformers.utils.logging.is_progress_bar_enabled(),
        datasets.is_progress_bar_enabled(),
        not huggingface_hub.utils.are_progress_bars_disabled(),
    )


@pytest.mark.parametrize(
    "settings", [(True, True, True), (True, True, False), (False, True, False), (False, False, True)]
)
def test_hiding_the_libraries_bars_restores_each_librarys_own_setting(settings):
    """``disable_tqdm`` hides the libraries' bars for a while; on the way out each library's switch is as it
    was, huggingface_hub's too, which transformers' own switch turns on and off with its own."""
    import datasets
    import huggingface_hub.utils
    import transformers

    from hf_cotmi.pipeline import _library_progress_bars

    if huggingface_hub.constants.HF_HUB_DISABLE_PROGRESS_BARS is not None:
        pytest.skip("HF_HUB_DISABLE_PROGRESS_BARS decides huggingface_hub's bars")
    before = _bar_settings()
    switch, hub = transformers.utils.logging, huggingface_hub.utils
    transformers_on, datasets_on, hub_on = settings
    try:
        switch.enable_progress_bar() if transformers_on else switch.disable_progress_bar()
        datasets.enable_progress_bars() if datasets_on else datasets.disable_progress_bars()
        # after transformers', which sets huggingface_hub's along with its own
        hub.enable_progress_bars() if hub_on else hub.disable_progress_bars()
        assert _bar_settings() == settings
        with _library_progress_bars(shown=False):
            assert _bar_settings() == (False, False, False)
        assert _bar_settings() == settings
        with _library_progress_bars(shown=True):
            assert _bar_settings() == settings
        assert _bar_settings() == settings
    finally:
        transformers_on, datasets_on, hub_on = before
        switch.enable_progress_bar() if transformers_on else switch.disable_progress_bar()
        datasets.enable_progress_bars() if datasets_on else datasets.disable_progress_bars()
        hub.enable_progress_bars() if hub_on else hub.disable_progress_bars()
