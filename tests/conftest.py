from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# one OpenMP thread, read when torch loads (set_num_threads alone left the tiny models' steps 1.7x slower on
# 2 cores: tests/test_trainer.py took 38 s instead of 23); subprocesses (DDP, CLI) inherit it
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402 - after OMP_NUM_THREADS

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)


class RecordingMetrics:
    """A ``compute_metrics`` that keeps each ``EvalPrediction`` it gets (``seen``) and reports its row count
    as the metric ``n``."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        self.seen.append(eval_pred)
        return {"n": float(len(eval_pred.predictions))}


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tiny_task import make_tokenizer

    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_features(tiny_tokenizer):
    from tiny_task import make_records, tokenise

    return tokenise(make_records(16), tiny_tokenizer)


DSS_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dss"
"""The real Distilling Step-by-Step files (../shared/data/dss from the repository), when they are there."""


def needs_dss(name: str = "svamp") -> pytest.MarkDecorator:
    """Skip a test when the real data of ``name`` is not at :data:`DSS_DATA`."""
    return pytest.mark.skipif(not (DSS_DATA / name).is_dir(), reason=f"{DSS_DATA / name} is not there")


@pytest.fixture(scope="session")
def dss_data_dir() -> Path:
    """:data:`DSS_DATA`; the test is skipped when the folder is missing."""
    if not DSS_DATA.is_dir():
        pytest.skip(f"real DSS data not found at {DSS_DATA}")
    return DSS_DATA


def training_arguments(output_dir: str | Path, **overrides: Any) -> Any:
    """Small, fast, CPU-only DSSMITrainingArguments (2 steps, batch 4, no saving, no reporting)."""
    from hf_cotmi import DSSMITrainingArguments

    values: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        learning_rate=1e-3,
        generation_max_length=6,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )
    values.update(overrides)
    return DSSMITrainingArguments(**values)


@pytest.fixture
def make_args() -> Callable[..., Any]:
    """``make_args(tmp_path, **overrides)``: :func:`training_arguments` writing to ``tmp_path / "out"``."""

    def make(folder: str | Path, **overrides: Any) -> Any:
        return training_arguments(Path(folder) / "out", **overrides)

    return make


TINY_STUDENT_WORDS = (
    "the answer is how many what a an of to in is are and entailment neutral contradiction "
    "man woman dog people where who"
)


def save_tiny_student(folder: str | Path) -> str:
    """Save a tiny T5 (d_model 16, one layer) and a word-level tokenizer as a pretrained student would be."""
    from hf_cotmi import build_tiny_seq2seq, build_word_tokenizer
    from hf_cotmi.data.synthetic import arithmetic_vocabulary

    tokenizer = build_word_tokenizer(arithmetic_vocabulary() + [TINY_STUDENT_WORDS])
    model = build_tiny_seq2seq(tokenizer, "t5", d_model=16, num_layers=1, num_heads=2, d_ff=32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def fit_causal_on_labels(
    model: Any, tokenizer: Any, inputs: Any, labels: Any, *, steps: int, max_target_length: int
) -> Any:
    """``model`` (a tiny decoder-only student) fitted on the label task, ``predict: <input>`` -> label, one
    example at a time for ``steps`` passes (Adam, lr 1e-2, seed 0), so that greedy generation writes the
    labels and ends at EOS; returned in eval mode."""
    from hf_cotmi.data.causal import encode_causal_task
    from hf_cotmi.prefixes import PREDICT_PREFIX

    enc = encode_causal_task(
        tokenizer,
        [PREDICT_PREFIX + x for x in inputs],
        list(labels),
        max_prompt_length=64,
        max_target_length=max_target_length,
    )
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        for ids, target in zip(enc.input_ids, enc.labels):
            model(input_ids=torch.tensor([ids]), labels=torch.tensor([target])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_student_dir(tmp_path_factory) -> str:
    """A folder holding :func:`save_tiny_student`'s student (shared; tests must not write into it)."""
    return save_tiny_student(tmp_path_factory.mktemp("tiny-student"))
