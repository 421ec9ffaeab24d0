"""Resuming picks the latest *complete* checkpoint: real checkpoints from a tiny run, and damaged copies."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from transformers import TrainerCallback

from hf_cotmi import DSSMITrainer, DSSMITrainingArguments, build_tiny_seq2seq
from hf_cotmi.checkpoints import checkpoint_problems, latest_complete_checkpoint, resolve_resume_checkpoint


def make_args(output_dir, max_steps):
    return DSSMITrainingArguments(
        str(output_dir), max_steps=max_steps, per_device_train_batch_size=4, report_to="none", use_cpu=True,
        save_strategy="steps", save_steps=1, disable_tqdm=True, seed=0, logging_steps=1,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_tokenizer, tiny_features):
    """A 2-step run with a checkpoint after each step (checkpoint-1, checkpoint-2)."""
    out = tmp_path_factory.mktemp("run") / "out"
    model = build_tiny_seq2seq(tiny_tokenizer, "t5")
    DSSMITrainer(
        model=model, args=make_args(out, 2), processing_class=tiny_tokenizer, train_dataset=tiny_features
    ).train()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    return out


@pytest.fixture
def run(trained_run, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(trained_run, copy)
    return copy


def half_written(
    run: Path, step: int, keep: tuple[str, ...] = ("config.json", "generation_config.json")
) -> Path:
    """What SIGKILL during a save leaves: checkpoint-<step> with only some of checkpoint-2's files."""
    folder = run / f"checkpoint-{step}"
    folder.mkdir()
    for name in keep:
        shutil.copy(run / "checkpoint-2" / name, folder / name)
    return folder


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_real_checkpoints_are_complete(trained_run):
    for step in (1, 2):
        assert checkpoint_problems(trained_run / f"checkpoint-{step}") == []
    assert latest_complete_checkpoint(trained_run) == str(trained_run / "checkpoint-2")


def test_a_half_written_checkpoint_is_skipped_with_a_warning(run, caplog):
    half_written(run, 10)  # numbered 10 so that a lexical sort would also put it last
    with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
        assert latest_complete_checkpoint(run) == str(run / "checkpoint-2")
    (record,) = [r for r in caplog.records if "checkpoint-10" in r.getMessage()]
    assert "incomplete" in record.getMessage() and "no model weights" in record.getMessage()


@pytest.mark.parametrize(
    "damage,problem",
    [
        (lambda f: truncate(f / "model.safetensors"), "model.safetensors is truncated"),
        (lambda f: truncate(f / "model.safetensors", keep=0.0001), "model.safetensors is truncated"),
        (lambda f: (f / "optimizer.pt").unlink(), "optimizer.pt is missing"),
        (lambda f: truncate(f / "optimizer.pt", keep=0.9), "optimizer.pt is truncated"),
        (lambda f: (f / "scheduler.pt").unlink(), "scheduler.pt is missing"),
        (lambda f: (f / "trainer_state.json").unlink(), "trainer_state.json is missing"),
        (lambda f: truncate(f / "trainer_state.json"), "trainer_state.json is truncated"),
    ],
)
def test_each_missing_or_truncated_part_makes_a_checkpoint_incomplete(run, damage, problem):
    folder = run / "checkpoint-3"
    shutil.copytree(run / "checkpoint-2", folder)
    damage(folder)
    problems = checkpoint_problems(folder)
    assert len(problems) == 1 and problems[0].startswith(problem)
    assert latest_complete_checkpoint(run) == str(run / "checkpoint-2")


@pytest.mark.parametrize(
    "header",
    [{}, {"__metadata__": {}}, {"weight": {"dtype": "F32"}}, {"weight": [1, 2]}, ["not", "a", "mapping"]],
)
def test_a_safetensors_file_with_a_header_that_describes_no_tensor_is_a_problem_not_a_crash(tmp_path, header):
    import json
    import struct

    from hf_cotmi.checkpoints import _safetensors_problem

    text = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(
        struct.pack("<Q", len(text)) + text + b"\0" * 16
    )  # 16 bytes the header does not describe
    problem = _safetensors_problem(path)
    assert problem is not None and problem.startswith("model.safetensors ")


def test_a_sharded_checkpoint_needs_every_shard(run):
    import json

    folder = run / "checkpoint-3"
    shutil.copytree(run / "checkpoint-2", folder)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert checkpoint_problems(folder) == [
        "model-00002-of-00002.safetensors is missing (a shard listed in model.safetensors.index.json)"
    ]
    shutil.copy(folder / "model-00001-of-00002.safetensors", folder / "model-00002-of-00002.safetensors")
    assert checkpoint_problems(folder) == []


def test_no_checkpoint_at_all(tmp_path):
    assert latest_complete_checkpoint(tmp_path) is None
    assert latest_complete_checkpoint(tmp_path / "missing") is None


@pytest.mark.parametrize("value", [True, "true", "True", "latest", " LATEST "])
def test_true_and_latest_mean_the_latest_complete_checkpoint(run, value):
    half_written(run, 3)
    assert resolve_resume_checkpoint(value, run) == str(run / "checkpoint-2")


@pytest.mark.parametrize("value", [None, False, "false", "False", "none", ""])
def test_false_and_none_mean_no_resume(run, value):
    assert resolve_resume_checkpoint(value, run) is None


def test_true_without_a_complete_checkpoint_is_an_error(tmp_path, run):
    with pytest.raises(ValueError, match="holds no complete checkpoint-N folder; train without"):
        resolve_resume_checkpoint("true", tmp_path / "empty")
    for folder in run.glob("checkpoint-*"):
        (folder / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match=r"\(incomplete: checkpoint-1, checkpoint-2\)"):
        resolve_resume_checkpoint(True, run)


def test_a_path_is_checked(run):
    assert resolve_resume_checkpoint(str(run / "checkpoint-1"), run) == str(run / "checkpoint-1")
    assert resolve_resume_checkpoint("checkpoint-1", run) == str(run / "checkpoint-1")  # inside output_dir
    half_written(run, 3)
    with pytest.raises(
        ValueError, match=r"'.*checkpoint-3': the checkpoint is incomplete \(no model weights"
    ):
        resolve_resume_checkpoint(str(run / "checkpoint-3"), run)
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        resolve_resume_checkpoint(str(run / "checkpoint-9"), run)
    with pytest.raises(TypeError, match="resume_from_checkpoint"):
        resolve_resume_checkpoint(3, run)


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_training_resumes_from_the_resolved_checkpoint(run, tiny_tokenizer, tiny_features):
    half_written(run, 3)
    resume = resolve_resume_checkpoint("latest", run)
    model = build_tiny_seq2seq(tiny_tokenizer, "t5", seed=5)
    counter = StepCounter()
    trainer = DSSMITrainer(
        model=model,
        args=make_args(run, 3),
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
        callbacks=[counter],
    )
    trainer.train(resume_from_checkpoint=resume)
    assert counter.steps == [3]  # steps 1 and 2 came from checkpoint-2; only step 3 ran
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [f"checkpoint-{i}" for i in (1, 2, 3)]
    assert checkpoint_problems(run / "checkpoint-3") == []  # the half-written one was overwritten whole


def fsdp_sharded(run: Path, step: int) -> Path:
    """checkpoint-<step> as FSDP's sharded state dict (FSDP2's default) writes it: the weights and the
    optimizer state as ``torch.distributed.checkpoint`` folders, no model.safetensors or optimizer.pt."""
    import torch
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    folder = run / f"checkpoint-{step}"
    shutil.copytree(run / "checkpoint-2", folder)
    weights = load_file(folder / "model.safetensors")
    optimizer = torch.load(folder / "optimizer.pt", weights_only=False)
    (folder / "model.safetensors").unlink()
    (folder / "optimizer.pt").unlink()
    dcp.save({"model": weights}, checkpoint_id=str(folder / "pytorch_model_fsdp_0"))
    dcp.save({"optimizer": optimizer}, checkpoint_id=str(folder / "optimizer_0"))
    return folder


def test_an_fsdp_sharded_checkpoint_is_complete_and_resumable(run):
    folder = fsdp_sharded(run, 3)
    assert checkpoint_problems(folder) == []
    assert latest_complete_checkpoint(run) == str(folder)
    assert resolve_resume_checkpoint("latest", run) == str(folder)


@pytest.mark.parametrize("part", ["pytorch_model_fsdp_0", "optimizer_0"])
def test_an_fsdp_sharded_checkpoint_without_its_metadata_is_incomplete(run, part):
    folder = fsdp_sharded(run, 3)
    (folder / part / ".metadata").unlink()  # what a save killed before it finished leaves
    problems = checkpoint_problems(folder)
    assert len(problems) == 1 and problems[0].startswith(f"{part}/ has no .metadata"), problems
    assert latest_complete_checkpoint(run) == str(run / "checkpoint-2")


def deepspeed_owned_scheduler(run: Path, step: int) -> Path:
    """checkpoint-<step> as the Trainer writes it under DeepSpeed when the DeepSpeed config has a "scheduler"
    (or "optimizer") section: the engine saves weights, optimizer and scheduler state in global_step<N>/, and
    the Trainer writes no optimizer.pt and no scheduler.pt (``Trainer._save_optimizer_and_scheduler``)."""
    import torch

    folder = run / f"checkpoint-{step}"
    shutil.copytree(run / "checkpoint-2", folder)
    for name in ("optimizer.pt", "scheduler.pt"):
        (folder / name).unlink()
    engine = folder / f"global_step{step}"
    engine.mkdir()
    torch.save({"module": {}, "lr_scheduler": {"last_epoch": step}}, engine / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {}}, engine / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (folder / "latest").write_text(f"global_step{step}")
    return folder


def test_a_deepspeed_checkpoint_whose_engine_holds_the_scheduler_is_complete(run):
    folder = deepspeed_owned_scheduler(run, 3)
    assert checkpoint_problems(folder) == []
    assert resolve_resume_checkpoint("latest", run) == str(folder)


def test_a_deepspeed_checkpoint_with_a_truncated_scheduler_or_no_trainer_state_is_incomplete(run):
    folder = deepspeed_owned_scheduler(run, 3)
    shutil.copy(run / "checkpoint-2" / "scheduler.pt", folder / "scheduler.pt")  # the Trainer's scheduler
    truncate(folder / "scheduler.pt")
    assert checkpoint_problems(folder) == ["scheduler.pt is truncated or not a torch.save file"]
    (folder / "scheduler.pt").unlink()
    (folder / "trainer_state.json").unlink()  # the Trainer writes it last: the save did not finish
    assert checkpoint_problems(folder) == ["trainer_state.json is missing"]
    assert latest_complete_checkpoint(run) == str(run / "checkpoint-2")


def fsdp_local(run: Path, step: int, ranks: int = 2) -> Path:
    """checkpoint-<step> as FSDP1's ``LOCAL_STATE_DICT`` writes it from ``ranks`` processes: one
    ``pytorch_model_fsdp_rank{N}.bin`` per rank, the optimizer state as a ``torch.distributed.checkpoint``
    folder, and one ``rng_state_{N}.pth`` per rank."""
    import torch
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    folder = run / f"checkpoint-{step}"
    shutil.copytree(run / "checkpoint-2", folder)
    weights = load_file(folder / "model.safetensors")
    optimizer = torch.load(folder / "optimizer.pt", weights_only=False)
    rng = torch.load(folder / "rng_state.pth", weights_only=False)
    for name in ("model.safetensors", "optimizer.pt", "rng_state.pth"):
        (folder / name).unlink()
    for rank in range(ranks):
        torch.save(weights, folder / f"pytorch_model_fsdp_rank{rank}.bin")
        torch.save(rng, folder / f"rng_state_{rank}.pth")
    dcp.save({"optimizer": optimizer}, checkpoint_id=str(folder / "optimizer_0"))
    return folder


def test_an_fsdp_local_state_dict_checkpoint_is_complete_and_resumable(run):
    folder = fsdp_local(run, 3)
    assert checkpoint_problems(folder) == []
    assert resolve_resume_checkpoint("latest", run) == str(folder)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (
            lambda folder: (folder / "pytorch_model_fsdp_rank1.bin").unlink(),
            "pytorch_model_fsdp_rank1.bin is missing",
        ),
        (
            lambda folder: truncate(folder / "pytorch_model_fsdp_rank0.bin"),
            "pytorch_model_fsdp_rank0.bin is truncated",
        ),
        (lambda folder: (folder / "optimizer_0" / ".metadata").unlink(), "optimizer_0/ has no .metadata"),
    ],
    ids=["a-rank-missing", "a-rank-truncated", "optimizer-unfinished"],
)
def test_an_fsdp_local_state_dict_checkpoint_needs_every_rank_and_its_optimizer(run, damage, problem):
    folder = fsdp_local(run, 3)
    damage(folder)
    problems = checkpoint_problems(folder)
    assert len(problems) == 1 and problems[0].startswith(problem), problems
    assert latest_complete_checkpoint(run) == str(run / "checkpoint-2")


def test_a_lora_checkpoint_with_a_named_adapter_is_complete_and_resumable(
    tmp_path, tiny_tokenizer, tiny_features
):
    """peft saves an adapter not named "default" in a subfolder (checkpoint-N/<name>/adapter_model.safetensors),
    and the Trainer resumes from such a checkpoint; it must count as complete, and a truncated adapter not."""
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM")

    def trainer(max_steps):
        model = peft.get_peft_model(build_tiny_seq2seq(tiny_tokenizer, "t5"), config, adapter_name="dss")
        return DSSMITrainer(
            model=model,
            args=make_args(tmp_path / "out", max_steps),
            processing_class=tiny_tokenizer,
            train_dataset=tiny_features,
        )

    trainer(1).train()
    folder = tmp_path / "out" / "checkpoint-1"
    assert (folder / "dss" / "adapter_model.safetensors").is_file()
    assert not (folder / "adapter_model.safetensors").exists()
    assert checkpoint_problems(folder) == []
    assert resolve_resume_checkpoint("latest", tmp_path / "out") == str(folder)
    counter = StepCounter()
    resumed = trainer(2)
    resumed.add_callback(counter)
    resumed.train(resume_from_checkpoint=str(folder))
    assert counter.steps == [2]  # the Trainer took step 1 from the checkpoint

    truncate(folder / "dss" / "adapter_model.safetensors")
    problems = checkpoint_problems(folder)
    assert len(problems) == 1 and problems[0].startswith("dss/adapter_model.safetensors is truncated")
    assert latest_complete_checkpoint(tmp_path / "out") == str(tmp_path / "out" / "checkpoint-2")


def resumed_steps(run: Path, tiny_tokenizer, tiny_features, max_steps: int, resume) -> list[int]:
    """The steps a fresh trainer runs when ``train(resume_from_checkpoint=resume)`` continues ``run``."""
    counter = StepCounter()
    trainer = DSSMITrainer(
        model=build_tiny_seq2seq(tiny_tokenizer, "t5", seed=5),
        args=make_args(run, max_steps),
        processing_class=tiny_tokenizer,
        train_dataset=tiny_features,
        callbacks=[counter],
    )
    trainer.train(resume_from_checkpoint=resume)
    return counter.steps


@pytest.mark.parametrize(
    "keep",
    [
        ("config.json", "generation_config.json"),  # killed right after the save began
        # killed before optimizer.pt was written
        ("config.json", "model.safetensors", "scheduler.pt", "rng_state.pth", "trainer_state.json"),
    ],
)
def test_train_resume_true_skips_a_half_written_checkpoint(run, tiny_tokenizer, tiny_features, caplog, keep):
    """``trainer.train(resume_from_checkpoint=True)`` resumes from the newest *complete* checkpoint, as the
    command's ``--resume_from_checkpoint true`` does (transformers alone takes the highest number: it fails on
    a folder without weights, or resumes with a fresh optimizer from one without optimizer.pt)."""
    folder = half_written(run, 3, keep)
    if "trainer_state.json" in keep:  # what the save of step 3 wrote
        state = json.loads((folder / "trainer_state.json").read_text())
        (folder / "trainer_state.json").write_text(json.dumps({**state, "global_step": 3}))
    with caplog.at_level(logging.WARNING, logger="hf_cotmi"):
        steps = resumed_steps(run, tiny_tokenizer, tiny_features, 4, resume=True)
    assert steps == [3, 4]  # from checkpoint-2: steps 3 and 4 ran
    assert any("checkpoint-3" in r.getMessage() and "incomplete" in r.getMessage() for r in caplog.records)


def test_train_resume_true_without_a_complete_checkpoint_names_the_folder(run, tiny_tokenizer, tiny_features):
    for step in (1, 2):
        (run / f"checkpoint-{step}" / "optimizer.pt").unlink()
    with pytest.raises(ValueError, match="holds no complete checkpoint-N folder") as error:
        resumed_steps(run, tiny_tokenizer, tiny_features, 4, resume=True)
    assert str(run) in str(error.value) and "checkpoint-1, checkpoint-2" in str(error.value)
