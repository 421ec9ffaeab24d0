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
    elsewhere, that folder is missing. The error names it and says how to give the adapters a base model, and
    doing what it says loads them as their run folder loads."""
    elsewhere = str(tmp_path / "gone" / "t5-small")  # absolute, and no folder here
    pushed = _adapters_without(lora_run, tmp_path / "pushed", (), base=elsewhere)
    cache_repository(hub_cache, pushed, repo=REPO)
    named = (
        f"it holds LoRA adapters whose base model {elsewhere!r} (base_model_name_or_path in its "
        f"{ADAPTER_CONFIG}) is no folder on this machine: it is where the base model was when the adapters "
        "were trained. Put the base model there, or "
    )
    with pytest.raises(CLIUsageError) as error:
        load_student(REPO, for_inference=True, device="cpu")
    message = str(error.value)
    assert message == (
        f"could not load the model {REPO!r}: {named}download the adapters (hf download {REPO} --local-dir DIR), "
        f"set base_model_name_or_path in DIR/{ADAPTER_CONFIG} to the base model's Hub name or its folder here "
        "and give --model DIR"
    ), message
    code, _, err = run(capsys, "predict", "--model", REPO, "q 1 ?")
    assert code == 2 and one_error_line(err, "predict").endswith(message), err
    with pytest.raises(CLIUsageError) as error:  # the folder itself: its own adapter config is to be set
        load_student(str(pushed), for_inference=True, device="cpu")
    assert str(error.value) == (
        f"could not load the model {str(pushed)!r}: {named}set base_model_name_or_path in "
        f"{pushed / ADAPTER_CONFIG} to the base model's Hub name or its folder here"
    ), error.value

    # what the error says: the downloaded adapters, their config naming the base model's folder here
    downloaded = _adapters_without(pushed, tmp_path / "DIR", (), base=tiny_student_dir)
    outputs = []
    for model in (str(downloaded), str(lora_run)):  # the reference: the run folder, as training saved it
        code, stdout, err = run(
            capsys, "predict", "--model", model, "--jsonl", "tom has 2 apples . how many ?"
        )
        assert code == 0, err
        outputs.append(json.loads(stdout))
    from_download, from_run = outputs
    assert (from_download["label"], from_download["rationale"]) == (from_run["label"], from_run["rationale"])
    assert from_download["confidence"] == pytest.approx(from_run["confidence"], rel=1e-5)


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
