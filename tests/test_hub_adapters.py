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
import shutil
from pathlib import Path

import pytest
import torch
from cli_runs import one_error_line, run
from conftest import training_arguments
from test_hub_sidecar import COMMIT, cache_repository, hub_cache  # noqa: F401 (a fixture)

from hf_cotmi.pipeline import DataArguments, EvaluationArguments, ModelArguments, run_training
from hf_cotmi.run_arguments import CLIUsageError
from hf_cotmi.students import ADAPTER_CONFIG, is_causal_folder, load_student

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
