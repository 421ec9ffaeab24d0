"""Train a tiny DSS + MI student for a few steps, evaluate it with ECECallback, and write both as JSON.

Run as one process (``python ddp_train.py OUT 4``) or under ``torchrun --nproc_per_node 2 ddp_train.py OUT 2``:
the per-device batch size is the second argument, so both give the same global batch.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tiny_task import make_records, make_tokenizer, tokenise  # noqa: E402

from hf_cotmi import (  # noqa: E402
    DSSMITrainer,
    DSSMITrainingArguments,
    ECECallback,
    build_compute_metrics,
    build_tiny_seq2seq,
)


def main() -> None:
    output_dir, per_device = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    tokenizer = make_tokenizer()
    records = make_records(16, seed=7)
    for i, record in enumerate(records):  # uneven lengths: token-count normalisation matters
        record["rationale"] += " so" * (2 * i)
    features = tokenise(records, tokenizer)
    model = build_tiny_seq2seq(tokenizer, "t5", seed=11)
    args = DSSMITrainingArguments(
        output_dir=output_dir,
        max_steps=3,
        per_device_train_batch_size=per_device,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        mi_variant="masked",
        dataloader_drop_last=True,
    )
    callback = ECECallback(label_candidates=[str(i) for i in range(2, 19)], plot=False)
    scored: list[int] = []  # rows this process scored itself
    score_share = callback._label_confidences

    def counting(model, tokenizer, dataset, *rest):
        scored.append(len(dataset))
        return score_share(model, tokenizer, dataset, *rest)

    callback._label_confidences = counting
    compared = build_compute_metrics(tokenizer)
    compared_rows: list[int] = []  # rows compute_metrics received (every process gets the gathered whole)

    def compute_metrics(eval_prediction):
        compared_rows.append(len(eval_prediction.label_ids))
        return compared(eval_prediction)

    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=features,
        eval_dataset=features.select(range(15)),  # not a multiple of the process count
        callbacks=[callback],
        compute_metrics=compute_metrics,
    )
    trainer.train()
    # training drops the last uneven batch (so one and two processes take the same steps); evaluation must not
    trainer.args.dataloader_drop_last = False
    metrics = trainer.evaluate()  # after training: an evaluation first would change the data order
    result = callback.last_results["eval"]
    with open(os.path.join(output_dir, f"ece_rank{args.process_index}.json"), "w") as handle:
        json.dump(
            {
                "eval_ece": metrics["eval_ece"],
                "eval_avg_confidence": metrics["eval_avg_confidence"],
                "scored_rows": scored,
                "compared_rows": compared_rows,
                "eval_accuracy": metrics["eval_accuracy"],
                "eval_losses": {k: v for k, v in metrics.items() if k.startswith("eval_loss")},
                "predicted_rows": len(trainer.predict(features.select(range(15))).predictions),
                "predictions": result.predictions,
                "confidences": result.confidences.tolist(),
            },
            handle,
        )
    # the evaluation losses again in other batches: 4 alone, 2 per process (the second process's last batch
    # repeats an example); they are means over the set, so the batches must not change them
    trainer.args.per_device_eval_batch_size = per_device
    small = trainer.evaluate()
    with open(os.path.join(output_dir, f"losses_rank{args.process_index}.json"), "w") as handle:
        json.dump({k: v for k, v in small.items() if k.startswith("eval_loss")}, handle)
    if trainer.is_world_process_zero():
        with open(os.path.join(output_dir, "log_history.json"), "w") as handle:
            json.dump({"world_size": args.world_size, "log_history": trainer.state.log_history}, handle)
    # Training and its collectives are over. Leave without the interpreter's teardown: with gloo on CPU a
    # rank sometimes aborts or hangs in the process group's destructor at exit, after all the work is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
