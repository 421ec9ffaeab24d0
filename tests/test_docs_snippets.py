"""The Python snippets of README.md and docs/: each is valid Python, the doctest sessions pass, and the ones
that need no Hub model, GPU or server run here against tiny students built in code (see the report of which
blocks run where in the tests below)."""

from __future__ import annotations

import ast
import doctest
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tiny_task import make_records, tokenise

import hf_cotmi
from hf_cotmi import DSSMITrainingArguments, build_tiny_seq2seq, build_word_tokenizer

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """``(line of its fence, code)`` of each ```python block of a Markdown page, dedented (a block in a tab
    is indented).

    Examples:
        >>> python_blocks(ROOT / "docs" / "guides" / "peft.md")[0][0]
        14
    """
    text = page.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start()) + 1, textwrap.dedent(match.group("body")))
        for match in FENCE.finditer(text)
    ]


def block_containing(page: str, text: str) -> str:
    """The one ```python block of ``page`` (relative to the repository) whose code contains ``text``."""
    blocks = [code for _, code in python_blocks(ROOT / page) if text in code]
    assert len(blocks) == 1, f"{page}: {len(blocks)} python blocks contain {text!r}"
    return blocks[0]


def run_block(code: str, page: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Execute a docs block in ``namespace`` (the names its page defines before it) and return the namespace."""
    exec(compile(code, f"<python block of {page}>", "exec"), namespace)
    return namespace


def shrunk_arguments(folder: Path) -> Callable[..., DSSMITrainingArguments]:
    """``DSSMITrainingArguments`` as a snippet calls it, cut to two CPU steps that log, evaluate and save (where
    the snippet does) at every step, writing under ``folder``."""

    def make(output_dir: str, **kwargs: Any) -> DSSMITrainingArguments:
        for every_step in ("eval_steps", "save_steps", "logging_steps"):
            if every_step in kwargs:
                kwargs[every_step] = 1
        kwargs.update(
            max_steps=2,
            per_device_train_batch_size=4,
            per_device_eval_batch_size=4,
            use_cpu=True,
            report_to="none",
            disable_tqdm=True,
            generation_max_length=4,
        )
        return DSSMITrainingArguments(str(folder / output_dir), **kwargs)

    return make


ALL_BLOCKS = [
    pytest.param(code, id=f"{page.relative_to(ROOT).as_posix()}:{line}")
    for page in PAGES
    for line, code in python_blocks(page)
]


@pytest.mark.parametrize("code", ALL_BLOCKS)
def test_every_python_snippet_is_valid_python(code):
    """Placeholders such as ``DSSMITrainer(model=model, args=args, ...)`` are a SyntaxError when pasted."""
    if code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(code, {}, "snippet", None, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        runner.run(test)
        assert runner.summarize(verbose=False).failed == 0
    else:
        ast.parse(code)


@pytest.fixture
def nli_tokenizer():
    words = " ".join(str(i) for i in range(30)) + " tom has apples and buys more . how many ? starts with + ="
    return build_word_tokenizer([words + " entailment neutral contradiction"])


def test_the_ece_callback_snippet_keeps_the_best_calibrated_checkpoint(tmp_path, monkeypatch, nli_tokenizer):
    """docs/calibration.md: with a dict of evaluation sets the ECE is logged per set (``eval_anli_ece``), so
    ``metric_for_best_model`` must name one set; ``"ece"`` stopped training at the first save with a KeyError."""
    code = block_containing("docs/calibration.md", "ECECallback(n_bins=10")
    monkeypatch.setattr(hf_cotmi, "DSSMITrainingArguments", shrunk_arguments(tmp_path))
    features = {
        "train": tokenise(make_records(8), nli_tokenizer),
        "test": tokenise(make_records(4, 1), nli_tokenizer),
    }
    namespace = run_block(
        code,
        "docs/calibration.md",
        {
            "model": build_tiny_seq2seq(nli_tokenizer, "t5"),
            "tok": nli_tokenizer,
            "features": features,
            "snli_features": tokenise(make_records(4, 2), nli_tokenizer),
        },
    )
    history = namespace["trainer"].state.log_history
    anli = [entry["eval_anli_ece"] for entry in history if "eval_anli_ece" in entry]
    assert len(anli) == 2 and sum("eval_snli_ece" in entry for entry in history) == 2
    assert namespace["trainer"].state.best_metric == min(anli)


def test_the_model_card_snippet_runs(tmp_path, capsys, tiny_tokenizer):
    """docs/api/model-card.md: the snippet imports what it calls and renders the card it changed."""
    code = block_containing("docs/api/model-card.md", "model_card_data(")
    features = {
        "train": tokenise(make_records(8), tiny_tokenizer),
        "valid": tokenise(make_records(4, 1), tiny_tokenizer),
    }
    args = shrunk_arguments(tmp_path)("out", eval_strategy="steps", eval_steps=1, logging_steps=1)
    namespace = {
        "model": build_tiny_seq2seq(tiny_tokenizer, "t5"),
        "tokenizer": tiny_tokenizer,
        "features": features,
        "args": args,
    }
    run_block(code, "docs/api/model-card.md", namespace)
    assert "model = AutoModelForCausalLM.from_pretrained(" in capsys.readouterr().out
    card = namespace["card"]
    assert card.metrics["eval_loss"] > 0 and card.training_logs[-1]["loss_mi"] > 0
