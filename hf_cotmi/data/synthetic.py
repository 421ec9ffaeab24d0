"""A synthetic chain-of-thought task generated in code: multi-step arithmetic word problems.

Each example is a short story in which someone starts with a number of items and then gains or loses
some, one event per step. The **label** is only the final count; the **rationale** spells out every
intermediate result (``7 + 5 = 12 . 12 - 3 = 9``), so it carries information the label alone does not.
That is the situation Distilling Step-by-Step is built for, which makes the task a fast, offline stand-in
for real teacher rationales: the ``hf-cotmi demo`` command, the quickstart notebook and the tests use it.

The columns are those of :func:`hf_cotmi.load_dss_dataset` and :func:`hf_cotmi.load_cot_dataset`
(``input``, ``label``, ``rationale``), so :func:`hf_cotmi.prepare_dss_features` applies unchanged.

Examples:
    >>> from hf_cotmi.data.synthetic import make_arithmetic_cot_dataset
    >>> data = make_arithmetic_cot_dataset(n_train=4, n_test=2, seed=0)
    >>> sorted(data), data["train"].column_names
    (['test', 'train'], ['input', 'label', 'rationale'])
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict

__all__ = [
    "ArithmeticProblem",
    "arithmetic_vocabulary",
    "generate_arithmetic_problem",
    "make_arithmetic_cot_dataset",
]

_NAMES = ("tom", "mia", "sam", "lea", "ben", "ava", "max", "zoe", "leo", "ida")
_ITEMS = ("apples", "marbles", "stickers", "coins", "books", "pens", "shells", "cards")
# events of the story; {n} is the amount
_GAINS = ("buys {n} more", "finds {n} more", "gets {n} from a friend", "wins {n} more")
_LOSSES = ("gives {n} away", "loses {n}", "sells {n}", "trades {n} away")
_CONNECTIVES = ("then", "after that", "later")


@dataclass(frozen=True)
class ArithmeticProblem:
    """One generated word problem: the text columns plus the numbers behind them.

    Attributes:
        input: the question, e.g. ``"tom has 7 apples . tom buys 5 more . then tom loses 3 . how many ..."``.
        label: the final count as text, e.g. ``"9"``.
        rationale: every step spelled out, ending in ``"so the answer is 9 ."``.
        start: the starting count.
        changes: the signed change of each step, e.g. ``(5, -3)``.

    Examples:
        >>> p = ArithmeticProblem("q", "9", "r", start=7, changes=(5, -3))
        >>> p.answer
        9
    """

    input: str
    label: str
    rationale: str
    start: int
    changes: tuple[int, ...]

    @property
    def answer(self) -> int:
        """The final count: the start plus every change.

        Examples:
            >>> ArithmeticProblem("q", "4", "r", start=2, changes=(3, -1)).answer
            4
        """
        return self.start + sum(self.changes)


def generate_arithmetic_problem(
    rng: random.Random, *, min_steps: int = 2, max_steps: int = 2, max_number: int = 9
) -> ArithmeticProblem:
    """Draw one multi-step word problem from ``rng``.

    The start is drawn from ``1..max_number``; each of ``min_steps..max_steps`` steps adds or removes
    ``1..max_number`` items, and a removal never takes more than there are, so every intermediate count is
    non-negative.

    Args:
        rng: the random generator (``random.Random(seed)`` makes the draw reproducible).
        min_steps: fewest gain/loss events.
        max_steps: most gain/loss events.
        max_number: largest starting count and largest amount of one event.

    Returns:
        An :class:`ArithmeticProblem`.

    Examples:
        >>> import random
        >>> p = generate_arithmetic_problem(random.Random(1))
        >>> int(p.label) == p.answer and len(p.changes) == 2
        True
    """
    if min_steps < 1 or max_steps < min_steps:
        raise ValueError(
            f"need 1 <= min_steps <= max_steps; got min_steps={min_steps}, max_steps={max_steps}"
        )
    if max_number < 1:
        raise ValueError(f"max_number must be at least 1; got {max_number}")
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    start = rng.randint(1, max_number)
    count = start
    question = [f"{name} has {start} {item} ."]
    steps = []
    changes = []
    for index in range(rng.randint(min_steps, max_steps)):
        lose = count > 0 and rng.random() < 0.5
        amount = rng.randint(1, min(max_number, count)) if lose else rng.randint(1, max_number)
        event = rng.choice(_LOSSES if lose else _GAINS)
        lead = f"{rng.choice(_CONNECTIVES)} {name}" if index else name
        question.append(f"{lead} {event.format(n=amount)} .")
        new = count - amount if lose else count + amount
        sign = "-" if lose else "+"
        steps.append(f"{count} {sign} {amount} = {new} .")
        changes.append(-amount if lose else amount)
        count = new
    question.append(f"how many {item} does {name} have now ?")
    steps.append(f"so the answer is {count} .")
    return ArithmeticProblem(
        input=" ".join(question),
        label=str(count),
        rationale=" ".join(steps),
        start=start,
        changes=tuple(changes),
    )


def arithmetic_vocabulary(*, max_steps: int = 2, max_number: int = 9) -> list[str]:
    """Every word the generator can write, numbers included, e.g. to build a tokenizer with no gaps.

    Args:
        max_steps: the generator's ``max_steps``.
        max_number: the generator's ``max_number``.

    Returns:
        Texts covering the vocabulary (one per phrase list), for :func:`hf_cotmi.build_word_tokenizer`.

    Examples:
        >>> "42" in " ".join(arithmetic_vocabulary(max_steps=4, max_number=9)).split()
        True
    """
    largest = max_number * (max_steps + 1)
    texts = [" ".join(str(n) for n in range(largest + 1))]
    texts += [" ".join(_NAMES), " ".join(_ITEMS), " ".join(_CONNECTIVES)]
    texts += [event.format(n=0) for event in _GAINS + _LOSSES]
    texts.append("has starts with gives = + - . so the answer is how many does have now ?")
    return texts


def make_arithmetic_cot_dataset(
    n_train: int = 2000,
    n_test: int = 200,
    *,
    n_valid: int = 0,
    seed: int = 0,
    min_steps: int = 2,
    max_steps: int = 2,
    max_number: int = 9,
) -> DatasetDict:
    """Generate the synthetic chain-of-thought task as a ``DatasetDict`` (``train``, ``valid``, ``test``).

    A split of size 0 is left out.

    Multi-step arithmetic word problems: the ``label`` is the final count, the ``rationale`` the
    step-by-step computation (see the module docstring). Inputs are unique across all splits, so no test
    question is seen in training. The same arguments always give the same data.

    Args:
        n_train: training examples.
        n_test: test examples.
        n_valid: validation examples.
        seed: seed of the generator.
        min_steps: fewest gain/loss events per problem.
        max_steps: most gain/loss events per problem.
        max_number: largest starting count and largest amount per event.

    Returns:
        A ``DatasetDict`` with string columns ``input``, ``label`` and ``rationale``.

    Raises:
        ValueError: a negative size, bad step bounds, or more examples than distinct problems exist.

    Examples:
        >>> data = make_arithmetic_cot_dataset(n_train=3, n_test=1, n_valid=1, seed=2)
        >>> {split: data[split].num_rows for split in data}
        {'train': 3, 'valid': 1, 'test': 1}
        >>> row = data["train"][0]
        >>> row["rationale"].endswith(f"so the answer is {row['label']} .")
        True
    """
    from datasets import Dataset, DatasetDict

    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    for split, size in sizes.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"n_{split} must be a non-negative integer; got {size!r}")
    rng = random.Random(seed)
    total = sum(sizes.values())
    seen: set[str] = set()
    problems: list[ArithmeticProblem] = []
    attempts = 0
    while len(problems) < total:
        attempts += 1
        if attempts > 50 * total + 1000:
            raise ValueError(
                f"could not draw {total} distinct problems with max_steps={max_steps} and "
                f"max_number={max_number}; ask for fewer examples or allow more steps or larger numbers"
            )
        problem = generate_arithmetic_problem(
            rng, min_steps=min_steps, max_steps=max_steps, max_number=max_number
        )
        if problem.input not in seen:
            seen.add(problem.input)
            problems.append(problem)
    splits = {}
    start = 0
    for split, size in sizes.items():
        if size == 0:
            continue
        chunk = problems[start : start + size]
        start += size
        splits[split] = Dataset.from_dict(
            {
                "input": [p.input for p in chunk],
                "label": [p.label for p in chunk],
                "rationale": [p.rationale for p in chunk],
            }
        )
    return DatasetDict(splits)
