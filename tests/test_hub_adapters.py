"""A LoRA student pushed to the Hub (an adapter repository) loads by its repository id, as its folder does.

``hf-cotmi train --use-peft`` saves adapters (``adapter_config.json``, ``adapter_model.safetensors``) and
``push_to_hub`` uploads them with the tokenizer and ``hf_cotmi_config.json``. ``load_student``, ``evaluate``
and ``predict`` given the repository id must load the base model the adapter config names and put the
adapters on top, as ``AutoPeftModel*.from_pretrained`` does, not take the repository for a full model. The
Hub is unreachable here: the repository is a Hugging Face cache folder read offline by the real
huggingface_hub, transformers and peft (see ``test_hub_sidecar.py``); the base model is the local folder
training started from, which the saved adapter config names by its absolute path.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from cli_runs import one_error_line, run
from conftest import training_arguments
from huggingface_hub import errors
from test_hub_sidecar import COMMIT, _http_error, cache_repository, hub_cache  # noqa: F401 (a fixture)

from hf_cotmi.pipeline import DataArguments, EvaluationArguments, ModelArguments, run_training
from hf_cotmi.run_arguments import CLIUsageError
from hf_cotmi.students import ADAPTER_CONFIG, failed_load_error, is_causal_folder, load_student, model_file

REPO = "me/lora-run"


@pytest.fixture(scope="module")
def lora_run(tiny_student_dir, tmp_path_factory) -> Path:
    """A two-step LoRA run (``--use-peft``) of the tiny T5 on the synthetic task: its output folder."""
    out = tmp_path_factory.mktemp("lora-run") / "out"
    run_training(
        ModelArguments(model_name_or_path=tiny_student_dir, use_peft=True, lora_r=4),
        DataArguments(dataset="synthetic", synthetic_train_size=12, synthetic_test_size=6),
        EvaluationArguments(num_examples_to_show=0),
        training_arguments(out, max_steps=2),
        print_fn=lambda text: None,
    )
    assert (out / ADAPTER_CONFIG).is_file() and not (out / "config.json").exists()
    return out


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@pytest.mark.parametrize("looked_online", [False, True], ids=["downloaded", "looked-up-online"])
def test_load_student_of_an_adapter_repo_puts_its_adapters_on_the_base(
    lora_run,
    tiny_student_dir,
    looked_online,
    hub_cache,  # noqa: F811
):
    from peft import AutoPeftModelForSeq2SeqLM, PeftModel

    snapshot = cache_repository(hub_cache, lora_run, repo=REPO)
    if looked_online:  # an earlier online load recorded that the repository has no config.json
        marker = snapshot.parents[1] / ".no_exist" / COMMIT / "config.json"
        marker.parent.mkdir(parents=True)
        marker.touch()
    assert json.loads((snapshot / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == tiny_student_dir
    assert is_causal_folder(REPO) is False  # peft's task type, SEQ_2_SEQ_LM, read from the repository

    merged = load_student(REPO, for_inference=True, device="cpu")
    assert not isinstance(merged.model, PeftModel) and merged.model.training is False
    # the reference: peft's own loading of the run folder, merged
    expected = _weights(AutoPeftModelForSeq2SeqLM.from_pretrained(str(lora_run)).merge_and_unload())
    base = _weights(load_student(tiny_student_dir).model)
    got = _weights(merged.model)
    assert got.keys() == expected.keys()
    assert all(torch.allclose(got[name], expected[name], atol=1e-6) for name in expected)
    assert any(not torch.equal(got[name], base[name]) for name in base)  # the adapters changed weights

    # not for inference: the adapters stay trainable on the base (a training run trains them further)
    trainable = load_student(REPO)
    assert isinstance(trainable.model, PeftModel)
    names = [name for name, p in trainable.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in name for name in names)
    assert (
        trainable.tokenizer("tom has 3 apples")["input_ids"]
        == merged.tokenizer("tom has 3 apples")["input_ids"]
    )


def test_evaluate_and_predict_of_an_adapter_repo_match_its_folder(lora_run, hub_cache, tmp_path, capsys):  # noqa: F811
    cache_repository(hub_cache, lora_run, repo=REPO)
    output = tmp_path / "metrics.json"
    plot = str(tmp_path / "d.png")
    code, _, err = run(capsys, "evaluate", "--model", REPO, "--plot-file", plot, "--output-file", str(output))
    assert code == 0, err
    report = json.loads(output.read_text())
    metrics = json.loads((lora_run / "results.json").read_text())["metrics"]
    assert report["model"] == REPO and report["num_examples"] == 6
    for key in ("accuracy", "ece", "avg_confidence"):
        assert report[key] == pytest.approx(metrics[f"test_{key}"], abs=1e-6), key

    outputs = []
    for model in (REPO, str(lora_run)):
        code, stdout, err = run(
            capsys, "predict", "--model", model, "--jsonl", "tom has 2 apples . how many ?"
        )
        assert code == 0, err
        outputs.append(json.loads(stdout))
    from_hub, from_folder = outputs
    assert (from_hub["label"], from_hub["rationale"]) == (from_folder["label"], from_folder["rationale"])
    assert from_hub["confidence"] == pytest.approx(from_folder["confidence"], rel=1e-5)


def test_an_adapter_repo_whose_base_model_is_missing_gives_the_folders_error(
    lora_run,
    tmp_path,
    capsys,
    hub_cache,  # noqa: F811
):
    folder = tmp_path / "moved"
    shutil.copytree(lora_run, folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**config, "base_model_name_or_path": "runs/base"}))
    cache_repository(hub_cache, folder, repo=REPO)
    errors = []
    for model in (REPO, str(folder)):
        with pytest.raises(CLIUsageError) as error:
            load_student(model, for_inference=True, device="cpu")
        errors.append(str(error.value))
    from_hub, from_folder = errors
    assert from_hub.startswith(
        f"could not load the model {REPO!r}: it holds LoRA adapters whose base model "
    ), from_hub
    assert "'runs/base' (base_model_name_or_path in its adapter_config.json)" in from_hub
    assert from_hub.replace(repr(REPO), "MODEL") == from_folder.replace(repr(str(folder)), "MODEL")
    assert from_hub.endswith(
        "a relative path is read from the current folder: give --base-model the base model's Hub name or its "
        "folder here, or run from the folder training ran in"
    ), from_hub
    code, _, err = run(capsys, "predict", "--model", REPO, "q 1 ?")
    assert code == 2 and one_error_line(err, "predict").endswith(from_hub), err


def test_an_adapter_repo_whose_base_folder_was_on_another_machine_says_how_to_load_it(
    lora_run,
    tiny_student_dir,
    tmp_path,
    capsys,
    hub_cache,  # noqa: F811
):
    """Adapters trained from a local folder name it by its absolute path (peft writes it); pushed and loaded
    elsewhere, that folder is missing. The error names it and says how to give the adapters a base model:
    evaluate and predict with --base-model (see the tests below), a run training them further (which has no
    such option) by setting their adapter config; doing that loads them as their run folder loads."""
    elsewhere = str(tmp_path / "gone" / "t5-small")  # absolute, and no folder here
    pushed = _adapters_without(lora_run, tmp_path / "pushed", (), base=elsewhere)
    cache_repository(hub_cache, pushed, repo=REPO)
    named = (
        f"it holds LoRA adapters whose base model {elsewhere!r} (base_model_name_or_path in its "
        f"{ADAPTER_CONFIG}) is no folder on this machine: it is where the base model was when the adapters "
        "were trained. "
    )
    for model in (REPO, str(pushed)):
        with pytest.raises(CLIUsageError) as error:
            load_student(model, for_inference=True, device="cpu")
        message = str(error.value)
        assert message == (
            f"could not load the model {model!r}: {named}Give --base-model the base model's Hub name or its "
            "folder here, or put the base model there"
        ), message
        for command, more in (("predict", ["q 1 ?"]), ("evaluate", [])):
            code, _, err = run(capsys, command, "--model", model, *more)
            assert code == 2 and one_error_line(err, command).endswith(message), err

    # trained further (for_inference=False, as train loads them), where there is no --base-model
    with pytest.raises(CLIUsageError) as error:
        load_student(REPO)
    assert str(error.value) == (
        f"could not load the model {REPO!r}: {named}Put the base model there, or download the adapters (hf "
        f"download {REPO} --local-dir DIR), set base_model_name_or_path in DIR/{ADAPTER_CONFIG} to the base "
        "model's Hub name or its folder here and give --model DIR"
    ), error.value
    with pytest.raises(CLIUsageError) as error:  # the folder itself: its own adapter config is to be set
        load_student(str(pushed))
    assert str(error.value) == (
        f"could not load the model {str(pushed)!r}: {named}Put the base model there, or set "
        f"base_model_name_or_path in {pushed / ADAPTER_CONFIG} to the base model's Hub name or its folder here"
    ), error.value

    # what that error says: the downloaded adapters, their config naming the base model's folder here
    downloaded = _adapters_without(pushed, tmp_path / "DIR", (), base=tiny_student_dir)
    from peft import PeftModel

    assert isinstance(load_student(str(downloaded)).model, PeftModel)
    from_download, from_run = (
        _prediction(capsys, "--model", model) for model in (str(downloaded), str(lora_run))
    )
    assert (from_download["label"], from_download["rationale"]) == (from_run["label"], from_run["rationale"])
    assert from_download["confidence"] == pytest.approx(from_run["confidence"], rel=1e-5)


QUESTION = "tom has 2 apples . how many ?"


@pytest.mark.parametrize(
    "windows_base",
    ["C:\\Users\\me\\models\\t5-small", "C:/Users/me/models/t5-small", "\\\\server\\models\\t5-small"],
    ids=["backslashes", "slashes", "unc"],
)
def test_a_windows_absolute_base_folder_is_said_to_be_on_another_machine(
    lora_run, tmp_path, monkeypatch, windows_base
):
    """Adapters trained on Windows name their base folder as Windows wrote it: on Linux that is no relative
    path to run from elsewhere, nor a Hub name to look up (no Hub request is made for it), but where the
    base model was on the machine that trained them."""
    from hf_cotmi import students

    folder = _adapters_without(lora_run, tmp_path / "from-windows", (), base=windows_base)
    looked_up = []
    real_model_file = students.model_file

    def spy(path: str, *args, **kwargs):
        looked_up.append(path)
        return real_model_file(path, *args, **kwargs)

    monkeypatch.setattr(students, "model_file", spy)
    with pytest.raises(CLIUsageError) as error:
        load_student(str(folder), for_inference=True, device="cpu")
    assert str(error.value) == (
        f"could not load the model {str(folder)!r}: it holds LoRA adapters whose base model {windows_base!r} "
        f"(base_model_name_or_path in its {ADAPTER_CONFIG}) is no folder on this machine: it is where the base "
        "model was when the adapters were trained. Give --base-model the base model's Hub name or its folder "
        "here, or put the base model there"
    ), error.value
    assert windows_base not in looked_up, looked_up


def _prediction(capsys, *options: str) -> dict:
    """What ``hf-cotmi predict --jsonl`` with ``options`` answers for :data:`QUESTION`."""
    code, stdout, err = run(capsys, "predict", *options, "--jsonl", QUESTION)
    assert code == 0, err
    return json.loads(stdout)


@pytest.mark.parametrize("where", ["hub", "folder"])
def test_base_model_loads_adapters_whose_base_folder_is_missing_as_where_they_were_trained(
    lora_run,
    tiny_student_dir,
    tmp_path,
    capsys,
    where,
    hub_cache,  # noqa: F811
):
    """evaluate and predict --base-model: adapters whose recorded base folder is missing here (pushed, or
    copied from another machine) load onto the base model given, and answer as the run folder does on the
    machine where its base model is."""
    pushed = _adapters_without(lora_run, tmp_path / "pushed", (), base=str(tmp_path / "gone" / "t5-small"))
    model = str(pushed)
    if where == "hub":
        cache_repository(hub_cache, pushed, repo=REPO)
        model = REPO
    reference = _prediction(capsys, "--model", str(lora_run))  # its adapter config names tiny_student_dir
    got = _prediction(capsys, "--model", model, "--base-model", tiny_student_dir)
    assert (got["label"], got["rationale"]) == (reference["label"], reference["rationale"])
    assert got["confidence"] == pytest.approx(reference["confidence"], rel=1e-5)

    output = tmp_path / "metrics.json"
    code, _, err = run(
        capsys,
        "evaluate",
        "--model",
        model,
        "--base-model",
        tiny_student_dir,
        "--plot-file",
        str(tmp_path / "d.png"),
        "--output-file",
        str(output),
    )
    assert code == 0, err
    report = json.loads(output.read_text())
    metrics = json.loads((lora_run / "results.json").read_text())["metrics"]  # the training run's figures
    assert (report["model"], report["base_model"], report["num_examples"]) == (model, tiny_student_dir, 6)
    for key in ("accuracy", "ece", "avg_confidence"):
        assert report[key] == pytest.approx(metrics[f"test_{key}"], abs=1e-6), key


def test_load_student_and_the_pipeline_take_base_model(
    lora_run,
    tiny_student_dir,
    tmp_path,
    monkeypatch,
    hub_cache,  # noqa: F811
):
    from peft import AutoPeftModelForSeq2SeqLM, PeftModel

    from hf_cotmi.pipeline import run_evaluation, run_prediction

    pushed = _adapters_without(lora_run, tmp_path / "pushed", (), base=str(tmp_path / "gone" / "t5-small"))
    cache_repository(hub_cache, pushed, repo=REPO)
    monkeypatch.chdir(Path(tiny_student_dir).parent)
    relative = Path(tiny_student_dir).name  # a folder here, read from the current folder

    merged = load_student(REPO, for_inference=True, device="cpu", base_model=relative)
    assert not isinstance(merged.model, PeftModel) and merged.model.training is False
    # the reference: peft's own loading of the run folder (whose recorded base model is here), merged
    expected = _weights(AutoPeftModelForSeq2SeqLM.from_pretrained(str(lora_run)).merge_and_unload())
    got = _weights(merged.model)
    assert got.keys() == expected.keys()
    assert all(torch.allclose(got[name], expected[name], atol=1e-6) for name in expected)

    # trainable, the adapters' config names the base model they are on, by its absolute path
    trainable = load_student(REPO, base_model=Path(relative))
    assert isinstance(trainable.model, PeftModel)
    names = [name for name, p in trainable.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in name for name in names)
    assert trainable.model.peft_config["default"].base_model_name_or_path == tiny_student_dir

    rows = run_prediction(REPO, [QUESTION], device="cpu", base_model=relative)
    reference = run_prediction(str(lora_run), [QUESTION], device="cpu")
    assert (rows[0]["label"], rows[0]["rationale"]) == (reference[0]["label"], reference[0]["rationale"])
    assert rows[0]["confidence"] == pytest.approx(reference[0]["confidence"], rel=1e-5)
    report = run_evaluation(
        REPO,
        DataArguments(),
        EvaluationArguments(),
        device="cpu",
        plot_file=str(tmp_path / "d.png"),
        disable_tqdm=True,
        base_model=relative,
    )
    metrics = json.loads((lora_run / "results.json").read_text())["metrics"]
    # the folder by its absolute path: as typed, a folder here named like a Hub model ("gpt2") read as that
    assert report["base_model"] == tiny_student_dir != relative
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert report["ece"] == pytest.approx(metrics["test_ece"], abs=1e-6)
    # a Hub name is recorded as it is
    cache_repository(hub_cache, Path(tiny_student_dir), repo="me/tiny-base")
    report = run_evaluation(
        REPO,
        DataArguments(),
        EvaluationArguments(),
        device="cpu",
        plot_file=str(tmp_path / "d.png"),
        disable_tqdm=True,
        base_model="me/tiny-base",
    )
    assert report["base_model"] == "me/tiny-base"
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)


@pytest.mark.parametrize("own_tokenizer", [True, False], ids=["adapters-tokenizer", "no-tokenizer"])
def test_with_base_model_the_tokenizer_is_the_adapters_own_else_the_base_models(
    lora_run, tiny_student_dir, tmp_path, own_tokenizer
):
    from transformers import AutoTokenizer

    from hf_cotmi import build_word_tokenizer

    # the base model here, with a tokenizer of its own that is not the adapters' (another vocabulary)
    base_here = tmp_path / "base-here"
    shutil.copytree(tiny_student_dir, base_here)
    build_word_tokenizer(["zebra yak tom"]).save_pretrained(base_here)
    adapters = _adapters_without(
        lora_run, tmp_path / "adapters", () if own_tokenizer else TOKENIZER_FILES, base=str(tmp_path / "gone")
    )
    student = load_student(str(adapters), for_inference=True, device="cpu", base_model=str(base_here))
    text = "tom has 3 apples"
    adapters_ids = AutoTokenizer.from_pretrained(str(lora_run))(text)["input_ids"]
    base_ids = AutoTokenizer.from_pretrained(str(base_here))(text)["input_ids"]
    assert adapters_ids != base_ids
    assert student.tokenizer(text)["input_ids"] == (adapters_ids if own_tokenizer else base_ids)


@pytest.mark.filterwarnings("ignore:could not read hf_cotmi_config.json")  # me/tiny has none
def test_base_model_with_a_full_model_is_refused_naming_both(
    tiny_student_dir,
    tmp_path,
    capsys,
    hub_cache,  # noqa: F811
):
    cache_repository(hub_cache, Path(tiny_student_dir), repo="me/tiny")
    base = str(tmp_path / "some-base")
    for model in (tiny_student_dir, "me/tiny"):
        expected = (
            f"--base-model {base!r} is for LoRA adapters, but --model {model!r} holds a full model (no "
            f"{ADAPTER_CONFIG}), which loads without a base model; leave --base-model out"
        )
        with pytest.raises(CLIUsageError) as error:
            load_student(model, for_inference=True, device="cpu", base_model=base)
        assert str(error.value) == expected
        code, _, err = run(capsys, "predict", "--model", model, "--base-model", base, "q 1 ?")
        assert code == 2 and one_error_line(err, "predict").endswith(expected), err
        code, _, err = run(
            capsys, "evaluate", "--model", model, "--base-model", base, "--dataset", "synthetic",
            "--synthetic-test-size", "2", "--plot-file", str(tmp_path / "d.png"),
        )  # fmt: skip
        assert code == 2 and one_error_line(err, "evaluate").endswith(expected), err
    with pytest.raises(CLIUsageError, match=r"^--base-model .* needs --model: the LoRA adapters"):
        load_student(texts=["tom has 3 apples"], base_model=base)


def test_a_base_model_that_does_not_load_or_fit_the_adapters_is_refused_naming_both(lora_run, tmp_path):
    from hf_cotmi import build_tiny_causal_lm, build_tiny_seq2seq, build_word_tokenizer

    gone = str(tmp_path / "gone")
    adapters = str(_adapters_without(lora_run, tmp_path / "adapters", (), base=gone))
    tokenizer = build_word_tokenizer(["tom has 3 apples"])

    def refusal(base: Path) -> str:
        with pytest.raises(CLIUsageError) as error:
            load_student(adapters, for_inference=True, device="cpu", base_model=str(base))
        return str(error.value)

    causal = tmp_path / "llama"
    build_tiny_causal_lm(
        tokenizer, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32
    ).save_pretrained(causal)
    assert refusal(causal) == (
        f"--base-model {str(causal)!r} holds a causal model, but the adapters of --model {adapters!r} are for a "
        f"seq2seq one (task_type SEQ_2_SEQ_LM in their {ADAPTER_CONFIG}); give the base model they were trained "
        f"on (their {ADAPTER_CONFIG} names {gone!r})"
    )
    for architecture, width, why in (
        ("t5", 32, "size mismatch for "),  # another width
        ("bart", 16, "Target modules {"),  # other module names: q_proj, ...
    ):
        other = tmp_path / architecture
        build_tiny_seq2seq(
            tokenizer, architecture, d_model=width, num_layers=1, num_heads=2, d_ff=32
        ).save_pretrained(other)
        message = refusal(other)
        assert message.startswith(
            f"the adapters of --model {adapters!r} do not fit --base-model {str(other)!r} ({why}"
        ), message
        assert message.endswith("); give the base model they were trained on"), message
        assert architecture == "t5" or "} not found in the base model" in message, message
    missing = tmp_path / "no-such-base"
    assert refusal(missing).startswith(f"could not load the model given as --base-model {str(missing)!r}: ")


@pytest.mark.parametrize("text", ['{"task_type": "SEQ_2_SEQ_LM"', '["LORA"]'])
def test_a_damaged_adapter_config_is_named(lora_run, hub_cache, tmp_path, text):  # noqa: F811
    folder = tmp_path / "damaged"
    shutil.copytree(lora_run, folder)
    (folder / ADAPTER_CONFIG).write_text(text)
    snapshot = cache_repository(hub_cache, folder, repo=REPO)
    expected = "is not valid JSON" if text.startswith("{") else "holds a list; expected the JSON object"
    with pytest.raises(CLIUsageError, match="restore it, or save the adapters again") as error:
        load_student(REPO)
    where = f"{snapshot / ADAPTER_CONFIG} (the {ADAPTER_CONFIG} of the Hub repository {REPO!r}) "
    assert str(error.value).startswith(where) and expected in str(error.value), error.value
    with pytest.raises(CLIUsageError) as error:
        load_student(str(folder))
    assert str(error.value).startswith(f"{folder / ADAPTER_CONFIG} {expected}"), error.value


def _adapters_without(lora_run: Path, folder: Path, names: tuple[str, ...], base: str | None = None) -> Path:
    """A copy of the LoRA run in ``folder`` without the files ``names``, its adapter config naming ``base``."""
    shutil.copytree(lora_run, folder)
    for name in names:
        (folder / name).unlink()
    if base is not None:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
        (folder / ADAPTER_CONFIG).write_text(json.dumps({**config, "base_model_name_or_path": base}))
    return folder


def _record_missing(snapshot: Path, *names: str) -> None:
    """Record in the cache that the repository of ``snapshot`` has no ``names`` (as an online look does)."""
    for name in names:
        marker = snapshot.parents[1] / ".no_exist" / COMMIT / name
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


def test_adapters_without_weights_are_named_not_their_base_model_found_on_the_hub(
    lora_run,
    tiny_student_dir,
    tmp_path,
    hub_cache,  # noqa: F811
):
    cache_repository(hub_cache, Path(tiny_student_dir), repo="me/tiny")
    # the reference: with its weights, the repository loads on the base model "me/tiny" from the Hub cache
    whole = _adapters_without(lora_run, tmp_path / "whole", (), base="me/tiny")
    cache_repository(hub_cache, whole, repo="me/whole")
    assert load_student("me/whole", for_inference=True, device="cpu").model.training is False

    folder = _adapters_without(
        lora_run, tmp_path / "no-weights", ("adapter_model.safetensors",), base="me/tiny"
    )
    cache_repository(hub_cache, folder, repo=REPO)
    with pytest.raises(CLIUsageError) as error:
        load_student(REPO, for_inference=True, device="cpu")
    message = str(error.value)
    assert message.startswith(f"could not load the model {REPO!r}: it is not a local folder"), message
    assert "base model" not in message, message  # "me/tiny" is in the cache: the adapters' weights are not
    # a base model the cache does not hold (offline) is still the one named
    absent = _adapters_without(lora_run, tmp_path / "absent-base", (), base="me/absent")
    cache_repository(hub_cache, absent, repo="me/absent-base")
    with pytest.raises(CLIUsageError, match="whose base model 'me/absent' .base_model_name_or_path"):
        load_student("me/absent-base", for_inference=True, device="cpu")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@pytest.mark.parametrize("where", ["hub", "folder"])
def test_adapters_without_tokenizer_files_load_their_base_models_tokenizer(
    lora_run,
    tiny_student_dir,
    tmp_path,
    where,
    caplog,
    hub_cache,  # noqa: F811
):
    from transformers import AutoTokenizer

    folder = _adapters_without(lora_run, tmp_path / "no-tokenizer", TOKENIZER_FILES)
    assert not any(folder.glob("tokenizer*")) and not (folder / "special_tokens_map.json").exists()
    name = str(folder)
    if where == "hub":  # an online look found no tokenizer files in the repository (a plain PEFT push)
        _record_missing(cache_repository(hub_cache, folder, repo=REPO), *TOKENIZER_FILES)
        name = REPO
    with caplog.at_level("INFO", logger="hf_cotmi"):
        student = load_student(name, for_inference=True, device="cpu")
    assert f"{name!r} holds adapters without tokenizer files" in caplog.text
    assert f"the tokenizer of their base model {tiny_student_dir!r}" in caplog.text
    base = AutoTokenizer.from_pretrained(tiny_student_dir)
    text = "tom has 3 apples and buys 4 more"
    assert student.tokenizer(text)["input_ids"] == base(text)["input_ids"]
    assert (
        len(student.tokenizer) == len(base) and student.tokenizer.unk_token_id != base(text)["input_ids"][0]
    )


def test_adapters_with_an_incomplete_tokenizer_are_still_refused(lora_run, tmp_path):
    # tokenizer_config.json says the folder has a tokenizer: its missing vocabulary is an error, as for a model
    folder = _adapters_without(lora_run, tmp_path / "incomplete", ("tokenizer.json",))
    with pytest.raises(CLIUsageError, match=rf"--model {re.escape(repr(str(folder)))}: no tokenizer files"):
        load_student(str(folder))


def test_offline_an_adapter_repo_whose_tokenizer_files_are_unknown_keeps_its_own(
    lora_run,
    tmp_path,
    hub_cache,  # noqa: F811
):
    # neither cached nor recorded missing: whether the repository has a tokenizer is unknown
    folder = _adapters_without(lora_run, tmp_path / "no-tokenizer", TOKENIZER_FILES)
    cache_repository(hub_cache, folder, repo=REPO)
    with pytest.raises(CLIUsageError, match=f"could not load the tokenizer {REPO!r}"):
        load_student(REPO)


def test_the_adapter_probe_takes_the_caches_record_without_asking_the_hub(
    tiny_student_dir,
    monkeypatch,
    hub_cache,  # noqa: F811
):
    import huggingface_hub

    asked: list[dict] = []

    def hf_hub_download(**kwargs):  # the Hub failing (after huggingface_hub's retries)
        asked.append(kwargs)
        raise _http_error(errors.HfHubHTTPError, 500)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    snapshot = cache_repository(hub_cache, Path(tiny_student_dir), repo="me/tiny")
    _record_missing(snapshot, ADAPTER_CONFIG)
    student = load_student("me/tiny")  # a full model, from the cache
    assert type(student.model).__name__ == "T5ForConditionalGeneration" and asked == []
    # without the record the Hub is asked, as before
    (snapshot.parents[1] / ".no_exist" / COMMIT / ADAPTER_CONFIG).unlink()
    with pytest.raises(CLIUsageError, match="500 Client Error"):
        load_student("me/tiny")
    assert asked == [{"repo_id": "me/tiny", "filename": ADAPTER_CONFIG}]
    # other files of the model are asked for even when recorded missing (a record can be stale)
    _record_missing(snapshot, "hf_cotmi_config.json")
    with pytest.raises(CLIUsageError, match="500 Client Error"):
        model_file("me/tiny", "hf_cotmi_config.json")


@pytest.mark.parametrize(
    "kind,status,no_such_repository",
    [
        ("RepositoryNotFoundError", 401, True),
        ("RepositoryNotFoundError", 404, True),
        ("GatedRepoError", 403, False),
    ],
)
def test_a_name_the_hub_has_no_repository_for_is_said_to_be_neither_folder_nor_repository(
    kind, status, no_such_repository
):
    answer = _http_error(getattr(errors, kind), status)
    wrapped = OSError("runs/lora is not a local folder and is not a valid model identifier")
    wrapped.__cause__ = answer  # as transformers raises it
    for error in (answer, wrapped):
        message = str(failed_load_error("model", "runs/lora", error))
        neither = "'runs/lora': it is neither a local folder nor a Hugging Face Hub repository"
        assert (neither in message) is no_such_repository, message
        assert message.endswith(f"({str(error).splitlines()[0]})"), message


@pytest.mark.parametrize("token", [None, "hf_stand_in"], ids=["no-token", "token-set"])
def test_a_private_repository_is_said_to_need_a_token_that_can_read_it_when_one_is_set(token, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: token)
    message = str(failed_load_error("model", "me/private", _http_error(errors.RepositoryNotFoundError, 401)))
    if token is None:
        assert "a private repository needs a token: hf auth login, or HF_TOKEN)" in message, message
    else:
        assert "a private repository needs a token that can read it)" in message, message
        assert "hf auth login" not in message, message


def test_a_repo_that_became_adapters_since_the_cache_recorded_none_loads_them(
    lora_run,
    monkeypatch,
    hub_cache,  # noqa: F811
):
    import huggingface_hub
    from peft import PeftModel

    # the cache knows the repository at an older commit, without adapter_config.json (a full model then, whose
    # files are gone); the Hub's main branch is now COMMIT, the adapters
    snapshot = cache_repository(hub_cache, lora_run, repo=REPO)
    repository, old = snapshot.parents[1], "f" * 40
    (repository / "snapshots" / old).mkdir()
    (repository / "refs" / "main").write_text(old)
    (repository / ".no_exist" / old).mkdir(parents=True)
    (repository / ".no_exist" / old / ADAPTER_CONFIG).touch()
    real_download = huggingface_hub.hf_hub_download
    asked: list[str] = []

    def hf_hub_download(**kwargs):  # the Hub answers with its main branch, which the cache then knows
        asked.append(kwargs["filename"])
        (repository / "refs" / "main").write_text(COMMIT)
        return real_download(**kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    student = load_student(REPO)
    assert isinstance(student.model, PeftModel), type(student.model)
    assert asked[0] == ADAPTER_CONFIG, asked
