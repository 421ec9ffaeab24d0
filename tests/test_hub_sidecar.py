"""``evaluate`` and ``predict`` of a Hub repository id read the run's ``hf_cotmi_config.json`` from the Hub.

A run pushed with ``push_to_hub`` uploads its sidecar beside the model; given the repository id instead of
the run folder, evaluate and predict must reuse the same settings (data, input column, prefixes, ...), not
silently fall back to the defaults. The Hub is unreachable here: a repository fetched earlier is a Hugging
Face cache folder (``models--me--renamed-run/snapshots/<commit>/`` and ``refs/main``, as ``from_pretrained``
and ``hf_hub_download`` leave it), read offline by the real huggingface_hub and transformers; what only an
online Hub answers (no such file, no such repository) is played by a stand-in for
``huggingface_hub.hf_hub_download``, which is where ``hf_cotmi.students.model_file`` (the sidecar reader's
fetch) imports it from.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
import pytest
from cli_runs import one_error_line, run
from huggingface_hub import errors
from test_cli_recorded_columns import RENAMED, _write, renamed_run  # noqa: F401 (a fixture)

from hf_cotmi import pipeline
from hf_cotmi.pipeline import SIDECAR_NAME, CLIUsageError, read_sidecar, recorded_input_column

REPO = "me/renamed-run"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline: files come from it or not at all (and no repository has been
    warned of yet in this process)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(pipeline, "_UNREACHABLE_SIDECARS", set(), raising=False)
    return cache


def cache_repository(cache: Path, folder: Path, *, sidecar: bool = True, repo: str = REPO) -> Path:
    """Put the files of ``folder`` into ``cache`` as ``repo`` at its main branch (without the sidecar
    unless ``sidecar``), as downloading them would; returns the snapshot folder."""
    repository = cache / ("models--" + repo.replace("/", "--"))
    snapshot = repository / "snapshots" / COMMIT
    shutil.copytree(folder, snapshot, ignore=None if sidecar else shutil.ignore_patterns(SIDECAR_NAME))
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(COMMIT)
    return snapshot


def _http_error(kind: type[Exception], status: int) -> Exception:
    """One of huggingface_hub's HTTP errors as the Hub's answer would raise it."""
    response = SimpleNamespace(headers={}, request=None, status_code=status)
    return kind(f"{status} Client Error (stand-in)", response=response)


# RemoteEntryNotFoundError since huggingface_hub 1.0; EntryNotFoundError itself before
_NO_SUCH_FILE = getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)


@pytest.fixture
def online_hub(monkeypatch) -> list[dict[str, Any]]:
    """The Hub answers that :data:`REPO` has no sidecar (other repositories do not exist); returns the calls
    the sidecar reader made, with their arguments."""
    calls: list[dict[str, Any]] = []

    def hf_hub_download(*args: Any, **kwargs: Any) -> str:
        calls.append({"args": args, **kwargs})
        if kwargs.get("repo_id") == REPO:
            raise _http_error(_NO_SUCH_FILE, 404)
        raise _http_error(errors.RepositoryNotFoundError, 401)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return calls


def test_evaluate_of_a_repo_id_uses_the_data_the_run_recorded(renamed_run, hub_cache, tmp_path, capsys):  # noqa: F811
    cache_repository(hub_cache, renamed_run)
    output = tmp_path / "metrics.json"
    plot = str(tmp_path / "d.png")
    code, _, err = run(capsys, "evaluate", "--model", REPO, "--plot-file", plot, "--output-file", str(output))
    assert code == 0, err  # without the sidecar: "no data given"
    report = json.loads(output.read_text())
    metrics = json.loads((renamed_run / "results.json").read_text())["metrics"]
    assert report["model"] == REPO and report["num_examples"] == 4
    for key in ("accuracy", "ece", "avg_confidence"):
        assert report[key] == pytest.approx(metrics[f"test_{key}"], abs=1e-6), key


def test_predict_of_a_repo_id_reads_the_runs_input_column(renamed_run, hub_cache, tmp_path, capsys):  # noqa: F811
    cache_repository(hub_cache, renamed_run)
    questions = _write(tmp_path / "new.jsonl", 20, 23, RENAMED)  # the text in "question", not "input"
    assert recorded_input_column(REPO) == "question"
    outputs = []
    for model in (REPO, str(renamed_run)):
        code, stdout, err = run(capsys, "predict", "--model", model, "--jsonl", "--input-file", questions)
        assert code == 0, err
        outputs.append([json.loads(line) for line in stdout.splitlines()])
    from_hub, from_folder = outputs
    assert [row["input"] for row in from_hub] == ["q 20 ?", "q 21 ?", "q 22 ?"]
    for got, expected in zip(from_hub, from_folder, strict=True):
        assert (got["label"], got["rationale"]) == (expected["label"], expected["rationale"])
        assert got["confidence"] == pytest.approx(expected["confidence"], rel=1e-5)


def test_a_damaged_sidecar_from_the_hub_is_named(renamed_run, hub_cache, capsys):  # noqa: F811
    snapshot = cache_repository(hub_cache, renamed_run, sidecar=False)
    (snapshot / SIDECAR_NAME).write_text('{"dataset": "synthetic')
    for command in (["evaluate", "--model", REPO], ["predict", "--model", REPO, "q 1 ?"]):
        code, _, err = run(capsys, *command)
        line = one_error_line(err, command[0])
        assert code == 2, err
        assert str(snapshot / SIDECAR_NAME) in line and repr(REPO) in line, line
        assert "is not valid JSON" in line and "upload the run's own copy" in line, line


def test_offline_without_the_sidecar_cached_warns_of_the_defaults(renamed_run, hub_cache, tmp_path, capsys):  # noqa: F811
    # the model was cached (by from_pretrained, say), its sidecar was not
    snapshot = cache_repository(hub_cache, renamed_run, sidecar=False)
    named = rf"could not read {SIDECAR_NAME} of the Hugging Face Hub repository '{REPO}'.*defaults are used"
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"input": "q 1 ?"}) + "\n")  # the default layout: the model is used
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stdout, err = run(capsys, "predict", "--model", REPO, "--jsonl", "--input-file", str(plain))
    assert code == 0, err
    assert json.loads(stdout)["input"] == "q 1 ?"  # the model itself loads from the cache
    # predict reads the sidecar twice (the input column, then the settings): one warning
    assert len([w for w in caught if re.match(named, str(w.message))]) == 1, [str(w.message) for w in caught]
    pipeline._UNREACHABLE_SIDECARS.clear()  # a new process
    with pytest.warns(UserWarning, match=named):
        code, _, err = run(capsys, "evaluate", "--model", REPO)
    assert code == 2 and f"--model {REPO!r} is not a local folder" in one_error_line(err, "evaluate")
    # the cache records that the repository has no sidecar (an earlier online look found none): no warning
    pipeline._UNREACHABLE_SIDECARS.clear()
    marker = snapshot.parents[1] / ".no_exist" / COMMIT / SIDECAR_NAME
    marker.parent.mkdir(parents=True)
    marker.touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_sidecar(REPO) == {}


def test_offline_a_repository_not_cached_at_all_gives_the_loading_error(hub_cache, capsys):
    with pytest.warns(UserWarning, match="'me/absent'"):
        code, _, err = run(capsys, "predict", "--model", "me/absent", "q 1 ?")
    line = one_error_line(err, "predict")
    assert code == 2 and "could not load the tokenizer 'me/absent': it is not a local folder" in line, line


def test_a_repository_without_a_sidecar_has_none_and_is_asked_as_the_model_is(online_hub):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_sidecar(REPO) == {}
    # the model options of evaluate and predict name no revision, token or cache folder, and from_pretrained
    # uses the defaults: the sidecar is asked for with the same ones
    assert online_hub == [{"args": (), "repo_id": REPO, "filename": SIDECAR_NAME}]


def test_a_repository_the_hub_refuses_is_the_error_loading_the_model_gives(online_hub):
    with pytest.raises(CLIUsageError, match="could not load the model 'me/private'.*401 Client Error"):
        read_sidecar("me/private")


def test_a_name_that_is_no_folder_nor_repository_id_is_left_to_the_model_loading(online_hub, tmp_path):
    assert read_sidecar(str(tmp_path / "no-such-run")) == {}
    assert online_hub == []
