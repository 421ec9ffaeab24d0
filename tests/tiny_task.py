"""A small arithmetic chain-of-thought task, tokenised by hand into the collator's columns.

Written independently of hf_cotmi.data so that trainer tests do not depend on the loaders.
"""

from __future__ import annotations

import random

from datasets import Dataset

from hf_cotmi import build_word_tokenizer


def make_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        records.append(
            {
                "input": f"tom has {a} apples and buys {b} more . how many apples ?",
                "label": str(a + b),
                "rationale": f"tom starts with {a} . {a} + {b} = {a + b} .",
            }
        )
    return records


def make_tokenizer():
    texts = [
        " ".join(str(i) for i in range(30)) + " tom has apples and buys more . how many ? starts with + ="
    ]
    return build_word_tokenizer(texts)


def tokenise(records: list[dict[str, str]], tokenizer, with_rationale: bool = True) -> Dataset:
    columns: dict[str, list] = {k: [] for k in ("input", "label", "input_ids", "attention_mask", "labels")}
    if with_rationale:
        for k in ("expl_input_ids", "expl_attention_mask", "rationale_labels"):
            columns[k] = []
    for record in records:
        enc = tokenizer("predict: " + record["input"])
        columns["input"].append(record["input"])
        columns["label"].append(record["label"])
        columns["input_ids"].append(enc["input_ids"])
        columns["attention_mask"].append(enc["attention_mask"])
        columns["labels"].append(tokenizer(text_target=record["label"])["input_ids"])
        if with_rationale:
            expl = tokenizer("explain: " + record["input"])
            columns["expl_input_ids"].append(expl["input_ids"])
            columns["expl_attention_mask"].append(expl["attention_mask"])
            columns["rationale_labels"].append(tokenizer(text_target=record["rationale"])["input_ids"])
    return Dataset.from_dict(columns)
