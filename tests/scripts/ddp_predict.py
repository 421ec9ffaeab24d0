"""Predict 11 examples given as a ``datasets.Dataset`` and as iterable sets; write what each process got as JSON.

One process: ``python ddp_predict.py OUT``; two: ``torchrun --nproc_per_node 2 ddp_predict.py OUT``. The
11 examples are no multiple of the global batch (2 per process), and their inputs have different lengths,
so batches are padded to different lengths. Every set is predicted by a trainer with accelerate's default
``dispatch_batches`` and by one with ``dispatch_batches=False``; the iterable sets are
``Dataset.to_iterable_dataset()`` with one shard and with two, and a ``torch.utils.data.IterableDataset`` of
row dicts. Each process writes ``OUT/report_rank{N}.json``: for each case, the decoded gold labels and
predicted labels of ``predict()``, and (main process) the ``predictions.jsonl`` lines it wrote; a case that
raised gives its error instead.

Every set is also evaluated (``"evaluate/{dispatch}/{name}"``): the decoded gold labels ``compute_metrics``
saw. Last, a ``torch.utils.data.IterableDataset`` given as the trainer's dict-valued ``eval_dataset`` is
evaluated twice (``"evaluate-twice/{dispatch}"``): the rows ``compute_metrics`` saw each time and how often
the set was read.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from tiny_task import make_records, make_tokenizer  # noqa: E402

from hf_cotmi import DSSMITrainer, DSSMITrainingArguments, build_tiny_seq2seq, prepare_dss_features  # noqa: E402

EXAMPLES = 11


class RowDicts(torch.utils.data.IterableDataset):
    """The rows of a ``datasets.Dataset`` as a plain torch iterable set (no length, no column names)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.reads = 0

    def __iter__(self):
        self.reads += 1
        return iter(self.dataset)


def records() -> list[dict[str, str]]:
    """The examples, the inputs of uneven lengths."""
    rows = make_records(EXAMPLES, seed=3)
    for i, row in enumerate(rows):
        row["input"] += " ." * (i * 3 % EXAMPLES)
    return rows


def main() -> None:
    output_dir = sys.argv[1]
    torch.set_num_threads(1)
    tokenizer = make_tokenizer()
    features = prepare_dss_features(Dataset.from_list(records()), tokenizer)
    model = build_tiny_seq2seq(tokenizer, "t5", seed=11).eval()
    sets = {
        "sized": lambda: features,
        "iterable": lambda: features.to_iterable_dataset(),
        "iterable-2-shards": lambda: features.to_iterable_dataset(num_shards=2),
        "torch-iterable": lambda: RowDicts(features),
    }
    report: dict[str, dict] = {}
    rank = 0
    for dispatch in ("default", "no-dispatch"):
        args = DSSMITrainingArguments(
            output_dir=os.path.join(output_dir, dispatch),
            per_device_eval_batch_size=2,
            output_rationale=True,
            rationale_max_new_tokens=3,
            generation_max_length=6,
            accelerator_config={"dispatch_batches": False} if dispatch == "no-dispatch" else {},
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        rank = args.process_index
        seen: list[list[str]] = []

        def compute_metrics(prediction, seen=seen) -> dict[str, float]:
            labels = prediction.label_ids
            gold = np.where(labels < 0, tokenizer.pad_token_id, labels)
            seen.append([text.strip() for text in tokenizer.batch_decode(gold, skip_special_tokens=True)])
            return {}

        trainer = DSSMITrainer(
            model=model, args=args, processing_class=tokenizer, compute_metrics=compute_metrics
        )
        for name, make in sets.items():
            case = f"{dispatch}/{name}"
            try:
                output = trainer.predict(make())
            except Exception as error:  # noqa: BLE001 - the report says what went wrong, the test fails on it
                report[case] = {"error": f"{type(error).__name__}: {error}"}
                continue
            labels, predictions = output.label_ids, output.predictions[0]
            report[case] = {
                "gold": tokenizer.batch_decode(
                    np.where(labels < 0, tokenizer.pad_token_id, labels), skip_special_tokens=True
                ),
                "predictions": [row["prediction"] for row in trainer.decode_predictions(output.predictions)],
                "predicted_rows": len(predictions),
            }
            if trainer.is_world_process_zero():
                with open(os.path.join(args.output_dir, "predictions.jsonl"), encoding="utf-8") as handle:
                    report[case]["jsonl"] = [json.loads(line) for line in handle]
            seen.clear()
            try:
                trainer.evaluate(make())
                report[f"evaluate/{case}"] = {"gold": seen[0]}
            except Exception as error:  # noqa: BLE001
                report[f"evaluate/{case}"] = {"error": f"{type(error).__name__}: {error}"}
        seen.clear()
        rows = RowDicts(features)
        trainer.eval_dataset = {"rows": rows}
        try:
            trainer.evaluate()
            trainer.evaluate()
            report[f"evaluate-twice/{dispatch}"] = {"gold": list(seen), "reads": rows.reads}
        except Exception as error:  # noqa: BLE001
            report[f"evaluate-twice/{dispatch}"] = {"error": f"{type(error).__name__}: {error}"}
    with open(os.path.join(output_dir, f"report_rank{rank}.json"), "w") as handle:
        json.dump(report, handle)
    # As in ddp_train.py: leave without the interpreter's teardown (gloo can hang in its destructor at exit).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
