"""Evaluate a tiny DSS student with ECECallback and build_compute_metrics; write what each process saw as JSON.

One process: ``python ddp_evaluate.py OUT REPORT 4``; two: ``torchrun --nproc_per_node 2 ddp_evaluate.py OUT
REPORT 2`` (the third argument is the per-device evaluation batch size). The 15 evaluation examples are not a
multiple of any global batch used, so the distributed sampler repeats examples to fill the last batch.

The gold label of every example whose greedy prediction is not empty is set to that prediction, so the
accuracy is neither 0 nor 1 and changes when an example is counted twice or left out.

Options: ``--confidence candidates|sequence|first_token``, ``--no-concat`` (``eval_do_concat_batches=False``),
``--batch-eval-metrics`` (``batch_eval_metrics=True``). Each process writes ``REPORT/rank{N}.json``: the
evaluation metrics, the rows ``compute_metrics`` compared, the callback's per-example results and whether this
process drew the reliability diagram. The trainer's output folder ``OUT`` is left to the trainer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tiny_task import make_records, make_tokenizer, tokenise  # noqa: E402

import hf_cotmi.plotting  # noqa: E402
from hf_cotmi import (  # noqa: E402
    DSSMITrainer,
    DSSMITrainingArguments,
    ECECallback,
    build_compute_metrics,
    build_tiny_seq2seq,
)
from hf_cotmi.metrics import decode_token_ids  # noqa: E402

EXAMPLES = 15
GENERATION_MAX_LENGTH = 6


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output_dir")
    parser.add_argument("report_dir")
    parser.add_argument("per_device", type=int)
    parser.add_argument("--confidence", choices=("candidates", "sequence", "first_token"), default="sequence")
    parser.add_argument("--no-concat", action="store_true")
    parser.add_argument("--batch-eval-metrics", action="store_true")
    return parser.parse_args()


def relabelled_records(model: torch.nn.Module, tokenizer) -> list[dict[str, str]]:
    """The examples, each with its own greedy prediction (one example at a time) as gold where it has one."""
    records = make_records(EXAMPLES, seed=3)
    features = tokenise(records, tokenizer)
    for record, row in zip(records, features):
        ids = torch.tensor([row["input_ids"]])
        with torch.no_grad():
            out = model.generate(ids, max_length=GENERATION_MAX_LENGTH, do_sample=False, num_beams=1)
        predicted = tokenizer.decode(out[0], skip_special_tokens=True).strip()
        if predicted:
            record["label"] = predicted
    return records


def main() -> None:
    options = parse_arguments()
    torch.set_num_threads(1)
    tokenizer = make_tokenizer()
    model = build_tiny_seq2seq(tokenizer, "t5", seed=11).eval()
    records = relabelled_records(model, tokenizer)
    features = tokenise(records, tokenizer)
    args = DSSMITrainingArguments(
        output_dir=options.output_dir,
        per_device_eval_batch_size=options.per_device,
        generation_max_length=GENERATION_MAX_LENGTH,
        eval_do_concat_batches=not options.no_concat,
        batch_eval_metrics=options.batch_eval_metrics,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    candidates = sorted({r["label"] for r in records}) if options.confidence == "candidates" else None
    callback = ECECallback(n_bins=5, confidence=options.confidence, label_candidates=candidates, plot=True)

    drawn: list[str] = []
    draw = hf_cotmi.plotting.save_reliability_diagram

    def recording_draw(*positional, **named):
        drawn.append(positional[2])
        return draw(*positional, **named)

    hf_cotmi.plotting.save_reliability_diagram = recording_draw

    accuracy = build_compute_metrics(tokenizer)
    compared: list[dict] = []  # each call's decoded references and predictions, and its compute_result

    def compute_metrics(eval_prediction, compute_result=None):
        compared.append(
            {
                "references": decode_token_ids(tokenizer, eval_prediction.label_ids),
                "predictions": decode_token_ids(tokenizer, eval_prediction.predictions),
                "compute_result": compute_result,
            }
        )
        if compute_result is None:  # the whole evaluation at once
            return accuracy(eval_prediction)
        return accuracy(eval_prediction, compute_result=compute_result)

    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        eval_dataset=features,
        callbacks=[callback],
        compute_metrics=compute_metrics,
    )
    metrics = trainer.evaluate()
    result = callback.last_results["eval"]
    os.makedirs(options.report_dir, exist_ok=True)
    with open(os.path.join(options.report_dir, f"rank{args.process_index}.json"), "w") as handle:
        json.dump(
            {
                "world_size": args.world_size,
                "metrics": metrics,
                "compared": compared,
                "drawn": drawn,
                "references": result.references,
                "predictions": result.predictions,
                "confidences": result.confidences.tolist(),
                "correct": result.correct.tolist(),
            },
            handle,
        )
    # Leave without the interpreter's teardown: with gloo on CPU a rank sometimes aborts or hangs in the
    # process group's destructor at exit, after all the work is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
