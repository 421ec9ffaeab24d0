"""push_to_hub, offline: everything up to the upload is real; only the two Hub calls are replaced.

`HfApi.create_repo` and `HfApi.upload_folder` are swapped for fakes that record the call and copy the
folder as it would be uploaded (with the Trainer's ignore patterns). With HF_HUB_OFFLINE=1 any other Hub
call would fail the test instead of reaching the network.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
import re
import shutil
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import save_tiny_student, training_arguments
from huggingface_hub import HfApi, ModelCard, RepoUrl

from hf_cotmi import (
    DSSMITrainer,
    ECECallback,
    build_compute_metrics,
    build_tiny_seq2seq,
    build_word_tokenizer,
    prepare_dss_features,
)
from hf_cotmi.cli import main
from hf_cotmi.data.synthetic import arithmetic_vocabulary, make_arithmetic_cot_dataset


class FakeHub:
    """Records create_repo/upload_folder calls and keeps a copy of each uploaded folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos: list[str] = []
        self.uploads: list[dict] = []

    def create_repo(self, api, repo_id, *args, **kwargs):
        self.repos.append(repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(
        self, api, *, repo_id, folder_path, ignore_patterns=None, run_as_future=False, **kwargs
    ):
        """Copy the folder as it is now; a ``run_as_future`` upload (the Trainer's checkpoint pushes) returns a
        finished future, as if the upload were done before training went on."""
        copy = self.root / f"upload-{len(self.uploads)}"
        patterns = list(ignore_patterns or [])
        for path in Path(folder_path).rglob("*"):
            relative = path.relative_to(folder_path).as_posix()
            if path.is_file() and not any(fnmatch.fnmatch(relative, p) for p in patterns):
                target = copy / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
        self.uploads.append({"repo_id": repo_id, "folder": copy, **kwargs})
        commit = SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0", oid="0" * 40)
        if not run_as_future:
            return commit
        done: Future = Future()
        done.set_result(commit)
        return done


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(
        HfApi, "create_repo", lambda api, repo_id, *a, **k: hub.create_repo(api, repo_id, *a, **k)
    )
    monkeypatch.setattr(HfApi, "upload_folder", lambda api, **k: hub.upload_folder(api, **k))
    return hub


def tiny_trainer(output_dir: Path, hub_model_id: str):
    data = make_arithmetic_cot_dataset(n_train=24, n_test=8, seed=0)
    tokenizer = build_word_tokenizer(arithmetic_vocabulary())
    model = build_tiny_seq2seq(tokenizer, "t5", d_model=16, num_layers=1, num_heads=2, d_ff=32)
    features = prepare_dss_features(data, tokenizer)
    args = training_arguments(
        output_dir,
        per_device_train_batch_size=8,
        seed=42,  # the transformers default this test was written with
        data_seed=None,
        push_to_hub=True,
        hub_model_id=hub_model_id,
    )
    trainer = DSSMITrainer(
        model=model,
        args=args,
        train_dataset=features["train"],
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer),
        callbacks=[ECECallback(plot=False)],
    )
    return trainer, features


def check_card(
    card_path: Path, repo_id: str, metrics: dict[str, float], datasets: list[str], base_model=None
):
    text = card_path.read_text()
    card = ModelCard(text)  # the YAML metadata parses as the Hub parses it
    data = card.data
    assert data.library_name == "transformers"
    assert {"hf-cotmi", "distilling-step-by-step", "chain-of-thought-distillation"} <= set(data.tags)
    assert data.datasets == datasets
    assert data.base_model == base_model
    values = {result.metric_name: result.metric_value for result in data.eval_results}
    for key in ("test_accuracy", "test_ece", "test_avg_confidence"):
        assert values[key] == pytest.approx(metrics[key], abs=1e-6), key
    raw = yaml.safe_load(text.split("---")[1])
    assert {"accuracy", "ece", "avg_confidence"} <= set(raw["metrics"])

    # usage snippet: loads from the repo, asks for a label and for a rationale
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert f'from_pretrained("{repo_id}")' in snippet
    assert '"predict: "' in snippet and '"explain: "' in snippet
    # training settings and both papers
    for setting in (
        "label_loss_weight",
        "rationale_loss_weight",
        "mi_loss_weight",
        "mi_variant",
        "learning_rate",
    ):
        assert f"| `{setting}` |" in text, setting
    assert "@inproceedings{hsieh2023distilling" in text and "@inproceedings{chen2024learning" in text
    assert "2305.02301" in text and "2403.03348" in text
    return snippet


def run_snippet(snippet: str, repo_id: str, folder: Path) -> str:
    """Execute the card's usage snippet against the uploaded copy instead of the Hub."""
    code = snippet.replace(f'"{repo_id}"', repr(str(folder)))
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, "model-card-usage", "exec"), {})
    return output.getvalue()


def test_trainer_push_to_hub_uploads_model_tokenizer_and_card(tmp_path, fake_hub):
    repo_id = "someone/tiny-dssmi"
    trainer, features = tiny_trainer(tmp_path / "out", repo_id)
    assert fake_hub.repos == [repo_id]  # push_to_hub=True creates the repo when the trainer starts
    trainer.train()
    metrics = trainer.evaluate(features["test"], metric_key_prefix="test")
    trainer.push_to_hub(model_name=repo_id, dataset="svamp", finetuned_from="google-t5/t5-small")

    assert len(fake_hub.uploads) == 1
    upload = fake_hub.uploads[0]
    assert upload["repo_id"] == repo_id and upload["commit_message"] == "End of training"
    files = {p.relative_to(upload["folder"]).as_posix() for p in upload["folder"].rglob("*")}
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert name in files, name
    assert not any(name.startswith("checkpoint-") for name in files)

    snippet = check_card(upload["folder"] / "README.md", repo_id, metrics, ["svamp"], "google-t5/t5-small")
    printed = run_snippet(snippet, repo_id, upload["folder"])
    assert printed.startswith("answer:") and "\nrationale:" in printed


def test_cli_train_push_to_hub(tmp_path, fake_hub, capsys):
    repo_id = "someone/cli-student"
    folder = save_tiny_student(tmp_path / "tiny")
    out = tmp_path / "out"
    code = main(
        ["train", "--model", str(folder), "--dataset", "synthetic", "--synthetic-train-size", "16",
         "--synthetic-test-size", "8", "--max-steps", "2", "--per-device-train-batch-size", "8",
         "--save-strategy", "no", "--use-cpu", "--generation-max-length", "6", "--rationale-max-new-tokens", "8",
         "--output-dir", str(out), "--push-to-hub", "--hub-model-id", repo_id]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"pushing {out} to the Hub as {repo_id}" in captured.out
    assert fake_hub.repos == [repo_id] and len(fake_hub.uploads) == 1
    uploaded = fake_hub.uploads[0]["folder"]
    names = set(os.listdir(uploaded))
    assert {"hf_cotmi_config.json", "reliability_diagram.png", "results.json", "model.safetensors"} <= names
    metrics = json.loads((uploaded / "results.json").read_text())["metrics"]
    check_card(uploaded / "README.md", repo_id, metrics, ["synthetic-arithmetic-cot"], base_model=None)


def test_push_to_hub_with_lora_uploads_the_adapter_under_a_peft_card(tmp_path, fake_hub, caplog):
    """An adapter-only repository is a PEFT repository: the Hub (and PEFT's own card) say ``library_name: peft``
    with the base model; the card's usage snippet still loads it (transformers applies the adapter)."""
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForSeq2SeqLM

    repo_id = "someone/tiny-dssmi-lora"
    base_folder = save_tiny_student(tmp_path / "base")
    data = make_arithmetic_cot_dataset(n_train=16, n_test=8, seed=0)
    tokenizer = build_word_tokenizer(arithmetic_vocabulary())
    features = prepare_dss_features(data, tokenizer)
    trainer = DSSMITrainer(
        model=AutoModelForSeq2SeqLM.from_pretrained(base_folder),
        args=training_arguments(
            tmp_path / "out", per_device_train_batch_size=8, push_to_hub=True, hub_model_id=repo_id
        ),
        train_dataset=features["train"],
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM"),
    )
    trainer.train()
    with caplog.at_level("WARNING", logger="hf_cotmi"):
        trainer.push_to_hub(model_name=repo_id, dataset="svamp", finetuned_from="google-t5/t5-small")
    # the card names the base model given; the adapters name the folder, which the push is warned of
    (warning,) = [r.getMessage() for r in caplog.records if "adapter_config.json" in r.getMessage()]
    assert f"names their base model by the local path {base_folder} " in warning
    assert "(from_pretrained('google-t5/t5-small'), --model google-t5/t5-small)" in warning
    assert not [r for r in caplog.records if "leaves base_model out" in r.getMessage()]

    folder = fake_hub.uploads[0]["folder"]
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= files
    assert "model.safetensors" not in files
    text = (folder / "README.md").read_text()
    data = ModelCard(text).data
    # the reference: the card PEFT itself writes for these adapters
    (tmp_path / "peft-card").mkdir()
    trainer.model.create_or_update_model_card(str(tmp_path / "peft-card"))
    assert ModelCard.load(str(tmp_path / "peft-card" / "README.md")).data.library_name == "peft"
    assert data.library_name == "peft"
    assert data.base_model == "google-t5/t5-small"
    assert data.pipeline_tag == "text2text-generation" and data.datasets == ["svamp"]
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "pip install peft" in snippet
    printed = run_snippet(snippet, repo_id, folder)
    assert printed.startswith("answer:") and "\nrationale:" in printed


@pytest.mark.parametrize("cached", [False, True], ids=["own-folder", "cache-folder"])
def test_cli_push_of_lora_from_a_local_folder_keeps_its_path_off_the_card(cached, tmp_path, fake_hub, capsys):
    """``--use-peft --model FOLDER --push-to-hub``: the card's metadata names no path as the base model (the
    repository of a Hugging Face cache folder, else none), and the run warns of what the Hub repository
    lacks: the base model's Hub name, and adapters that name a base model other machines can load."""
    pytest.importorskip("peft")
    repo_id = "someone/cli-lora"
    commit = "0123456789abcdef0123456789abcdef01234567"
    relative = f"hub/models--google-t5--t5-small/snapshots/{commit}" if cached else "models/t5-small"
    folder = save_tiny_student(tmp_path / relative)
    out = tmp_path / "out"
    code = main(
        ["train", "--model", folder, "--use-peft", "--lora-r", "4", "--dataset", "synthetic",
         "--synthetic-train-size", "8", "--synthetic-test-size", "4", "--max-steps", "1",
         "--per-device-train-batch-size", "8", "--save-strategy", "no", "--use-cpu", "--disable-tqdm", "true",
         "--report-to", "none", "--generation-max-length", "4", "--rationale-max-new-tokens", "4",
         "--num-examples-to-show", "0", "--output-dir", str(out), "--push-to-hub", "--hub-model-id", repo_id]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    uploaded = fake_hub.uploads[-1]["folder"]
    text = (uploaded / "README.md").read_text()
    assert ModelCard(text).data.library_name == "peft"
    assert ModelCard(text).data.base_model == ("google-t5/t5-small" if cached else None)
    assert str(tmp_path) not in text
    assert json.loads((uploaded / "adapter_config.json").read_text())["base_model_name_or_path"] == folder
    warnings = [line for line in captured.out.splitlines() if line.startswith("warning: ")]
    hub_name = "google-t5/t5-small" if cached else "org/name"
    adapters = (
        f"warning: the adapters' adapter_config.json names their base model by the local path {folder} "
        "(base_model_name_or_path, which peft writes), so peft loads them only where that folder is (elsewhere "
        "hf-cotmi evaluate/predict need --base-model); to push adapters that load anywhere, train from the base "
        f"model's Hub name (from_pretrained({hub_name!r}), --model {hub_name})"
    )
    if cached:
        assert warnings == [adapters], captured.out
    else:
        assert len(warnings) == 2 and warnings[1] == adapters, captured.out
        assert warnings[0].startswith(
            f"warning: the model card leaves base_model out of its metadata: the student was loaded from the "
            f"folder {folder}, which names no Hugging Face Hub repository"
        ), warnings


@pytest.mark.parametrize("strategy", ["checkpoint", "every_save"])
def test_checkpoint_pushes_upload_the_sidecar_with_the_checkpoint(strategy, tmp_path, fake_hub, capsys):
    """The Trainer pushes a checkpoint as soon as it is saved, before the callbacks' ``on_save``: the sidecar
    must be in the folders by then, so the Hub's ``last-checkpoint/`` (checkpoint) and the repository root
    during training (every_save) can be evaluated with the run's prefixes and data."""
    repo_id = "someone/checkpointed"
    folder = save_tiny_student(tmp_path / "tiny")
    out = tmp_path / "out"
    code = main(
        ["train", "--model", str(folder), "--dataset", "synthetic", "--synthetic-train-size", "16",
         "--synthetic-test-size", "4", "--max-steps", "2", "--per-device-train-batch-size", "8",
         "--save-strategy", "steps", "--save-steps", "1", "--use-cpu", "--disable-tqdm", "--report-to", "none",
         "--generation-max-length", "4", "--rationale-max-new-tokens", "4", "--num-examples-to-show", "0",
         "--predict-prefix", "label it: ", "--output-dir", str(out), "--push-to-hub", "--hub-model-id", repo_id,
         "--hub-strategy", strategy]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    during_training = [u for u in fake_hub.uploads if u["commit_message"].startswith("Training in progress")]
    if strategy == "checkpoint":
        pushed = [u["folder"] for u in during_training if u.get("path_in_repo") == "last-checkpoint"]
    else:
        pushed = [u["folder"] for u in during_training if u.get("path_in_repo") is None]
    assert len(pushed) == 2, fake_hub.uploads  # one push per saved step
    final = json.loads((out / "hf_cotmi_config.json").read_text())
    for uploaded in pushed:
        assert (uploaded / "model.safetensors").is_file()
        sidecar = uploaded / "hf_cotmi_config.json"
        assert sidecar.is_file(), sorted(p.name for p in uploaded.iterdir())
        assert json.loads(sidecar.read_text()) == final
        assert final["predict_prefix"] == "label it: " and final["data"]["dataset"] == "synthetic"


def test_cli_train_push_saves_the_model_and_writes_the_sidecar_once(tmp_path, fake_hub, monkeypatch, capsys):
    """``hf-cotmi train --push-to-hub`` saves the weights into the output folder once and writes the sidecar
    there once, and the one upload still holds the card, the sidecar, the weights and results.json as they
    are on disk."""
    from transformers import Trainer

    from hf_cotmi import pipeline

    out = tmp_path / "out"
    weight_saves: list[str] = []
    sidecar_writes: list[str] = []
    save_weights, write_json = Trainer._save, pipeline.write_json

    def counted_save(trainer, output_dir=None, state_dict=None):
        weight_saves.append(os.path.normpath(output_dir or trainer.args.output_dir))
        return save_weights(trainer, output_dir, state_dict=state_dict)

    def counted_write(path, values, **options):
        if os.path.basename(path) == "hf_cotmi_config.json":
            sidecar_writes.append(os.path.normpath(os.path.dirname(path)))
        return write_json(path, values, **options)

    monkeypatch.setattr(Trainer, "_save", counted_save)
    monkeypatch.setattr(pipeline, "write_json", counted_write)
    repo_id = "someone/pushed-once"
    code = main(
        ["train", "--model", str(save_tiny_student(tmp_path / "tiny")), "--dataset", "synthetic",
         "--synthetic-train-size", "16", "--synthetic-test-size", "4", "--max-steps", "1",
         "--per-device-train-batch-size", "8", "--save-strategy", "no", "--use-cpu", "--disable-tqdm",
         "--report-to", "none", "--generation-max-length", "4", "--rationale-max-new-tokens", "4",
         "--num-examples-to-show", "0", "--output-dir", str(out), "--push-to-hub", "--hub-model-id", repo_id]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert {"weights saved": weight_saves, "sidecar written": sidecar_writes} == {
        "weights saved": [os.path.normpath(out)],
        "sidecar written": [os.path.normpath(out)],
    }

    assert len(fake_hub.uploads) == 1
    uploaded = fake_hub.uploads[0]["folder"]
    names = {p.relative_to(uploaded).as_posix() for p in uploaded.rglob("*")}
    # what the upload held before the second model save and sidecar write were removed
    assert names == {
        "README.md", "hf_cotmi_config.json", "results.json", "model.safetensors", "config.json",
        "generation_config.json", "tokenizer.json", "tokenizer_config.json", "reliability_diagram.png",
        "all_results.json", "train_results.json", "test_results.json", "training_args.bin",
    }  # fmt: skip
    for name in ("README.md", "hf_cotmi_config.json", "results.json", "model.safetensors"):
        assert (uploaded / name).read_bytes() == (out / name).read_bytes(), name
    check_card(
        uploaded / "README.md", repo_id, json.loads((out / "results.json").read_text())["metrics"],
        ["synthetic-arithmetic-cot"],
    )  # fmt: skip
