"""Parsers for PaLM's raw chain-of-thought outputs, as released with Distilling Step-by-Step.

Each string in a release file ``llm/<split>_CoT_<i>.json`` is PaLM's raw few-shot continuation: the
rationale, an answer sentence, and usually further invented exemplars that must be cut off. The parsers
here follow the rules DSS used (Hsieh et al., 2023), so that labels and rationales match what DSS users
expect. They are pure functions: ``str -> PalmOutput``. A string that does not parse gives an empty
``label`` (``PalmOutput.parsed`` is then False); callers count those.

Examples:
    >>> out = parse_svamp_output("He has 84 / 2 points. The answer is (84 / 2).\\n\\nQ: ...")
    >>> out.rationale, out.label
    ('He has 84 / 2 points.', '(84 / 2)')
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "PalmOutput",
    "PARSERS",
    "parse_palm_output",
    "parse_cqa_output",
    "parse_svamp_output",
    "parse_esnli_output",
    "parse_anli_output",
    "SINGLE_TASK_ORDERS",
    "ANSWER_MARKER",
    "EXPLANATION_MARKER",
    "single_task_target",
    "parse_single_task_label",
    "parse_single_task_rationale",
]

_CHOICE_LETTER = re.compile(r"\(.\)")
# DSS's greedy pattern: from the first "(" to the last ")" on the same line.
_PARENTHESISED = re.compile(r"\(.*\)")


@dataclass(frozen=True)
class PalmOutput:
    """One parsed PaLM output.

    Attributes:
        rationale: the reasoning text before the answer sentence (may be empty).
        label: the answer PaLM gave; empty when the string does not parse.

    Examples:
        >>> PalmOutput("Because.", "yes").parsed
        True
    """

    rationale: str
    label: str

    @property
    def parsed(self) -> bool:
        """True when a label was found (the DSS rules give an empty label otherwise)."""
        return bool(self.label)


_FAILED = PalmOutput("", "")


def _split_once(text: str, marker: str) -> tuple[str, str] | None:
    """``text.split(marker)`` when it gives exactly two parts (as DSS unpacked it), else None."""
    parts = text.split(marker)
    if len(parts) != 2:
        return None
    return parts[0], parts[1]


def parse_cqa_output(text: str) -> PalmOutput:
    """Parse a CommonsenseQA output: ``<rationale> So the answer is (c) <answer>.``

    Keeps the text before the first ``Q:``; it must contain ``So the answer is`` exactly once. The
    rationale is the part before it; the label is the text after the first ``(x)`` choice letter, stripped
    and without a trailing period.

    Examples:
        >>> parse_cqa_output("Beavers need wood. So the answer is (c) wooded area.\\n\\nQ: next").label
        'wooded area'
    """
    head = text.split("Q:")[0].rstrip()
    parts = _split_once(head, "So the answer is")
    if parts is None:
        return _FAILED
    rationale, answer = parts
    pieces = _CHOICE_LETTER.split(answer)
    if len(pieces) < 2:
        return PalmOutput(rationale.strip(), "")
    label = pieces[1].strip()
    if label.endswith("."):
        label = label[:-1]
    return PalmOutput(rationale.strip(), label)


def parse_svamp_output(text: str) -> PalmOutput:
    """Parse a SVAMP output: ``<rationale> The answer is (<equation>).``

    Keeps the text before the first ``Q:``; it must contain ``The answer is`` exactly once. The label is the
    parenthesised expression after it, matched as DSS did with the greedy pattern ``\\(.*\\)``: from the
    first ``(`` to the last ``)`` on that line. So ``(10 - (3 + 6)).`` gives ``(10 - (3 + 6))`` and a
    compound answer such as ``(19 - 6) + (18 - 15)`` is kept whole (one that is not an equation, such as
    ``(8 / 4) and (6 / 4)``, then fails to evaluate, as it did in DSS).

    Examples:
        >>> parse_svamp_output("10 * 45 is 450. The answer is (10 * 45).").label
        '(10 * 45)'
    """
    head = text.split("Q:")[0].rstrip()
    parts = _split_once(head, "The answer is")
    if parts is None:
        return _FAILED
    rationale, answer = parts
    match = _PARENTHESISED.search(answer)
    return PalmOutput(rationale.strip(), match.group(0) if match else "")


def parse_esnli_output(text: str) -> PalmOutput:
    """Parse an e-SNLI output: ``<rationale>\\nAnswer: <label>\\n\\nPremise: ...``

    The rationale is the text before the first ``Answer:``; the label is the text after the first
    ``Answer: `` up to ``Premise``, stripped.

    Examples:
        >>> parse_esnli_output("A dog is an animal.\\nAnswer: entailment\\n\\nPremise: x").label
        'entailment'
    """
    rationale = text.split("Answer:")[0].strip()
    pieces = text.split("Answer: ")
    if len(pieces) < 2:
        return PalmOutput(rationale, "")
    return PalmOutput(rationale, pieces[1].split("Premise")[0].strip())


def parse_anli_output(text: str) -> PalmOutput:
    """Parse an ANLI output: ``<rationale> So the answer is <label>.\\n\\nPremise: ...``

    Keeps the text before the first ``Premise:``; it must contain ``So the answer is`` exactly once. The
    label is the rest, stripped, without its final character (a period).

    Examples:
        >>> parse_anli_output("Cats are not dogs. So the answer is contradiction.\\n\\nPremise: x").label
        'contradiction'
    """
    head = text.split("Premise:")[0].rstrip()
    parts = _split_once(head, "So the answer is")
    if parts is None:
        return _FAILED
    rationale, answer = parts
    return PalmOutput(rationale.strip(), answer.strip()[:-1])


PARSERS: dict[str, Callable[[str], PalmOutput]] = {
    "cqa": parse_cqa_output,
    "svamp": parse_svamp_output,
    "esnli": parse_esnli_output,
    "anli1": parse_anli_output,
}
"""The parser of each DSS dataset, by name: what ``parse_palm_output`` calls."""


def parse_palm_output(name: str, text: str) -> PalmOutput:
    """Parse one PaLM output string with the rules for dataset ``name`` (a key of ``PARSERS``).

    Examples:
        >>> parse_palm_output("anli1", "No. So the answer is neutral.").label
        'neutral'
    """
    try:
        parser = PARSERS[name]
    except KeyError:
        raise ValueError(f"no PaLM output parser for {name!r}; known: {sorted(PARSERS)}") from None
    return parser(text)


# ------------------------------------------------------------------- the single-task baseline's target

SINGLE_TASK_ORDERS: tuple[str, ...] = ("rationale_first", "label_first")
"""Orders of the single-task target: ``rationale_first`` (``<rationale> So the answer is <label>``, the DSS
release's style) or ``label_first`` (``<label> Explanation: <rationale>``)."""

ANSWER_MARKER = "So the answer is"
"""Written between rationale and label in a ``rationale_first`` single-task target."""

EXPLANATION_MARKER = "Explanation:"
"""Written between label and rationale in a ``label_first`` single-task target."""

# matched case-insensitively and with any spacing: uncased and word-level tokenizers decode
# "So the answer is" as "so the answer is" and "Explanation:" as "explanation :"; "so" must not end a
# word ("also the answer is" is not the marker)
_ANSWER_PATTERN = re.compile(r"(?<![^\W\d_])so\s+the\s+answer\s+is", re.IGNORECASE)
_EXPLANATION_PATTERN = re.compile(r"explanation\s*:", re.IGNORECASE)


def _check_order(order: str) -> None:
    if order not in SINGLE_TASK_ORDERS:
        raise ValueError(
            f"single-task order {order!r} is not supported; expected one of {SINGLE_TASK_ORDERS}"
        )


def single_task_target(label: str, rationale: str, order: str = "rationale_first") -> str:
    """One target holding rationale and label: the single-task baseline of Chen et al. (2024), Table 1.

    Args:
        label: the answer.
        rationale: the teacher's rationale.
        order: ``"rationale_first"`` or ``"label_first"`` (:data:`SINGLE_TASK_ORDERS`).

    Raises:
        ValueError: an unknown ``order``.

    Examples:
        >>> single_task_target("neutral", "A man may not be tall.")
        'A man may not be tall. So the answer is neutral'
        >>> single_task_target("neutral", "A man may not be tall.", "label_first")
        'neutral Explanation: A man may not be tall.'
    """
    _check_order(order)
    label, rationale = str(label).strip(), str(rationale).strip()
    if order == "rationale_first":
        return f"{rationale} {ANSWER_MARKER} {label}".strip()
    return f"{label} {EXPLANATION_MARKER} {rationale}".strip()


def parse_single_task_label(text: str, order: str = "rationale_first") -> str:
    """The label in a generated single-task target (the inverse of :func:`single_task_target`).

    ``rationale_first``: the text after the *last* ``So the answer is`` (any case and spacing; not after a
    letter, so ``also the answer is`` is no marker), without a final period; ``""`` when the marker is
    missing (a generation cut off before its answer counts as wrong). ``label_first``: the text before the
    first ``Explanation:``, or all of it when the marker is missing (generation stopped after the label).

    Raises:
        ValueError: an unknown ``order``.

    Examples:
        >>> parse_single_task_label("a man may not be tall . so the answer is neutral .")
        'neutral'
        >>> parse_single_task_label("a man may not be tall .")
        ''
        >>> parse_single_task_label("neutral explanation : a man may not be tall .", "label_first")
        'neutral'
    """
    _check_order(order)
    if order == "rationale_first":
        matches = list(_ANSWER_PATTERN.finditer(text))
        if not matches:
            return ""
        label = text[matches[-1].end() :].strip()
    else:
        label = _EXPLANATION_PATTERN.split(text, maxsplit=1)[0].strip()
    return label[:-1].rstrip() if label.endswith(".") else label


def parse_single_task_rationale(text: str, order: str = "rationale_first") -> str:
    """The rationale in a generated single-task target: everything that is not the label or a marker.

    The counterpart of :func:`parse_single_task_label`. ``rationale_first``: the text before the *last*
    ``So the answer is`` (all of it when the marker is missing). ``label_first``: the text after the first
    ``Explanation:`` (``""`` when the marker is missing). With both parsers a generation can be rewritten
    with another label in its slot, ``single_task_target(candidate, rationale, order)``: this is how the
    benchmarks score each candidate label after the rationale the student wrote.

    Raises:
        ValueError: an unknown ``order``.

    Examples:
        >>> parse_single_task_rationale("a man may not be tall . so the answer is neutral .")
        'a man may not be tall .'
        >>> parse_single_task_rationale("a man may not be tall .")
        'a man may not be tall .'
        >>> parse_single_task_rationale("neutral explanation : a man may not be tall .", "label_first")
        'a man may not be tall .'
        >>> parse_single_task_rationale("neutral", "label_first")
        ''
    """
    _check_order(order)
    if order == "rationale_first":
        matches = list(_ANSWER_PATTERN.finditer(text))
        return (text[: matches[-1].start()] if matches else text).strip()
    parts = _EXPLANATION_PATTERN.split(text, maxsplit=1)
    return parts[1].strip() if len(parts) == 2 else ""
