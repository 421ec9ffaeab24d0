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


# ------------------------------------------------------------------ names the snippets that do not run use

SHELL_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?:bash|sh|shell|console)\n(?P<body>.*?)^(?P=indent)```", re.S | re.M
)
# `hf-cotmi train`, `$(which hf-cotmi) train` (accelerate launch) and `-m hf_cotmi.cli train` (torchrun)
COMMAND = re.compile(
    r"(?:(?<![\w-])hf-cotmi\)?|-m hf_cotmi\.cli)\s+(?P<command>[a-z][\w-]*)(?P<rest>[^|;&#]*)"
)
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")


def command_flags(text: str) -> list[tuple[int, str, list[str]]]:
    """``(line, command, flags)`` of each ``hf-cotmi <command>`` in the shell blocks of a Markdown page, with
    its ``\\``-continued lines joined.

    Examples:
        >>> command_flags("```bash\\nhf-cotmi train --max-steps 5 \\\\\\n  --use-peft  # --no\\n```\\n")
        [(2, 'train', ['--max-steps', '--use-peft'])]
    """
    found = []
    for block in SHELL_FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start()) + 2
        body = textwrap.dedent(block.group("body"))
        for offset, line in enumerate(re.split(r"(?<!\\)\n", body)):
            for call in COMMAND.finditer(line.replace("\\\n", " ")):
                found.append((first_line + offset, call.group("command"), FLAG.findall(call.group("rest"))))
    return found


def keyword_calls(code: str) -> list[tuple[int, str, list[str]]]:
    """``(line, name, keywords)`` of each call of a public ``hf_cotmi`` name in a Python block (a doctest
    session's ``>>>`` lines included).

    Examples:
        >>> keyword_calls("args = DSSMITrainingArguments('out', mi_weight=0.1)\\nprint(args)")
        [(1, 'DSSMITrainingArguments', ['mi_weight'])]
    """
    if code.lstrip().startswith(">>>"):
        code = "\n".join(line[4:] for line in code.splitlines() if line.startswith((">>> ", "... ")))
    calls = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call):
            function = node.func
            name = function.id if isinstance(function, ast.Name) else getattr(function, "attr", None)
            if name in hf_cotmi.__all__:
                calls.append((node.lineno, name, [keyword.arg for keyword in node.keywords if keyword.arg]))
    return calls


def accepted_keywords(name: str) -> set[str] | None:
    """The keyword names a public ``hf_cotmi`` callable takes (``DSSMITrainer`` passes the rest of
    ``Seq2SeqTrainer``'s on; ``run_demo`` takes the demo's options); None where any name is taken."""
    import inspect

    from transformers import Seq2SeqTrainer

    from hf_cotmi.cli import build_parser

    value = getattr(hf_cotmi, name)
    if name == "DSSMITrainer":
        return set(inspect.signature(value).parameters) | set(inspect.signature(Seq2SeqTrainer).parameters)
    if name == "run_demo":
        return {action.dest for action in build_parser("demo")._actions} | {"output_dir", "print_fn"}
    if not callable(value):
        return None
    parameters = inspect.signature(value).parameters.values()
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return {parameter.name for parameter in parameters}


def test_the_hf_cotmi_commands_of_the_docs_use_flags_that_exist():
    """Most shell blocks need a Hub model, data or a GPU and never run here: a renamed or mistyped flag in
    them is found only by comparing with the parser of each command."""
    from hf_cotmi.cli import build_parser

    options = {}
    unknown = []
    for page in PAGES:
        for line, command, flags in command_flags(page.read_text(encoding="utf-8")):
            if command not in options:
                parser = build_parser(command)  # an unknown command is a CLIUsageError here
                options[command] = {o for action in parser._actions for o in action.option_strings}
            where = f"{page.relative_to(ROOT).as_posix()}:{line}"
            unknown += [
                f"{where}: hf-cotmi {command} {flag}" for flag in flags if flag not in options[command]
            ]
    assert not unknown, "flags the commands do not have:\n" + "\n".join(unknown)
    assert {"train", "evaluate", "predict", "demo", "generate-rationales"} <= set(options)


def test_the_python_snippets_call_hf_cotmi_with_argument_names_that_exist():
    """The snippets that load Hub models are only parsed above; their keyword names are checked here
    against the signatures (``DSSMITrainingArguments(mi_weight=...)`` would fail only when pasted)."""
    checked, unknown = 0, []
    for param in ALL_BLOCKS:
        where, code = param.id, param.values[0]
        for line, name, keywords in keyword_calls(code):
            accepted = accepted_keywords(name)
            if accepted is None:
                continue
            checked += len(keywords)
            unknown += [f"{where}+{line}: {name}({word}=...)" for word in keywords if word not in accepted]
    assert not unknown, "argument names that do not exist:\n" + "\n".join(unknown)
    assert checked > 50
