"""Few-shot chain-of-thought prompts: the shipped templates and the user's own template files.

A template is plain text with one ``{input}`` placeholder, replaced by the record's input (nothing else
in the text is interpreted, so braces elsewhere are safe). The shipped templates live in
``hf_cotmi/teacher/prompts/<task>.txt``; each teaches the answer sentence that
:mod:`hf_cotmi.teacher.answers` parses. Through a chat API (or a local model with a chat template) the
filled template is sent as one user message, and the model's or server's chat template formats it.

Examples:
    >>> template = load_prompt_template("arithmetic")
    >>> prompt = render_prompt(template, "Tom has 3 apples and buys 4. How many now?")
    >>> prompt.endswith("Q: Tom has 3 apples and buys 4. How many now?\\nA:")
    True
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from ..data.dss import DEFAULT_NLI_SEPARATOR
from .answers import TASKS

__all__ = ["PLACEHOLDER", "load_prompt_template", "render_prompt", "format_task_input", "choices_in_input"]

PLACEHOLDER = "{input}"
"""The placeholder a template must contain exactly once."""


def _check_template(text: str, where: str) -> str:
    count = text.count(PLACEHOLDER)
    if count != 1:
        raise ValueError(f"{where}: a prompt template must contain {PLACEHOLDER} exactly once; found {count}")
    return text


def load_prompt_template(task: str = "generic", template_file: str | os.PathLike[str] | None = None) -> str:
    """The prompt template for ``task``: the shipped one, or the text of ``template_file`` when given.

    Args:
        task: a built-in task (``nli``, ``multiple_choice``, ``arithmetic``, ``generic``).
        template_file: your own template (UTF-8 text with ``{input}`` once); overrides the shipped one.

    Raises:
        ValueError: an unknown task, or a template without exactly one ``{input}``.
        FileNotFoundError: ``template_file`` does not exist.

    Examples:
        >>> "So the answer is neutral." in load_prompt_template("nli")
        True
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not a built-in task; expected one of {', '.join(TASKS)}")
    if template_file is not None:
        path = Path(template_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompt template {str(path)!r} does not exist or is not a file")
        return _check_template(path.read_text(encoding="utf-8"), str(path))
    text = resources.files(__package__).joinpath("prompts", f"{task}.txt").read_text(encoding="utf-8")
    return _check_template(text, f"shipped prompt {task}.txt")


def format_task_input(task: str, text: str) -> str:
    """The record's input as the task's template expects it.

    For nli an input ``premise</s>hypothesis`` (the joined form the DSS loaders produce) becomes
    ``premise\\nHypothesis: hypothesis``; every other input is used as it is.

    Examples:
        >>> print(format_task_input("nli", "A dog runs.</s>An animal moves."))
        A dog runs.
        Hypothesis: An animal moves.
    """
    if task == "nli" and DEFAULT_NLI_SEPARATOR in text:
        premise, hypothesis = text.split(DEFAULT_NLI_SEPARATOR, 1)
        return f"{premise.strip()}\nHypothesis: {hypothesis.strip()}"
    return text


def render_prompt(template: str, text: str, task: str = "generic") -> str:
    """Fill ``template`` with one record's input.

    Examples:
        >>> render_prompt("Q: {input}\\nA:", "What is {x}?")
        'Q: What is {x}?\\nA:'
    """
    head, tail = _check_template(template, "prompt template").split(PLACEHOLDER)
    return head + format_task_input(task, text).strip() + tail.rstrip("\n")


_CHOICES_HEADING = "Answer Choices:"
_CHOICE_LINE = re.compile(r"\((?P<letter>[a-zA-Z])\) ?(?P<text>.*)")


def choices_in_input(text: str) -> list[str]:
    """The answer choices a multiple-choice input shows, in order; ``[]`` when it shows none.

    Reads the form :func:`hf_cotmi.data.dss.format_cqa_input` writes (and the multiple_choice prompt
    shows): a line ``Answer Choices:``, then one line ``(a) text``, ``(b) text``, ... per choice.

    Examples:
        >>> choices_in_input("Where is the arch?\\nAnswer Choices:\\n(a) Boston\\n(b) St. Louis")
        ['Boston', 'St. Louis']
        >>> choices_in_input("What is 2 + 2?")
        []
    """
    lines = text.splitlines()
    headings = [number for number, line in enumerate(lines) if line.strip() == _CHOICES_HEADING]
    if not headings:
        return []
    choices: list[str] = []
    for line in lines[headings[-1] + 1 :]:
        match = _CHOICE_LINE.fullmatch(line.strip())
        if match is None or match["letter"].lower() != chr(ord("a") + len(choices)):
            break
        choices.append(match["text"])
    return choices
