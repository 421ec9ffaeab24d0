"""Train a tiny DSS + MI student for two steps in one batch layout; write its logs and its trained weights.

One process: ``python ddp_train_layouts.py OUT 4``; two: ``torchrun --nproc_per_node 2 ddp_train_layouts.py OUT 2``
(the second argument is the per-device batch size). Options: ``--student t5|llama``, ``--mi-variant
paper|masked`` and ``--accumulation N`` (gradient accumulation steps), so the same global batch of 4 can be
laid out as 4 x 1 process, 2 x 2 processes or 1 x 2 processes x 2 accumulation steps.

Writes, from process 0, ``OUT/log_history.json`` (world size, accumulation, log history) and
``OUT/weights.pt`` (the unwrapped model's state dict after training).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from tiny_task import make_records, make_tokenizer, tokenise  # noqa: E402

from hf_cotmi import (  # noqa: E402
    DSSMITrainer,
    DSSMITrainingArguments,
    build_tiny_causal_lm,
    build_tiny_seq2seq,
    prepare_dss_features,
)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output_dir")
    parser.add_argument("per_device", type=int)
    parser.add_argument("--student", choices=("t5", "llama"), default="llama")
    parser.add_argument("--mi-variant", choices=("paper", "masked"), default="masked")
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument(
        "--optim", default="adamw_torch", help="sgd makes the update a multiple of the gradient"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    return parser.parse_args()


def student_and_features(student: str, tokenizer) -> tuple[torch.nn.Module, Dataset]:
    """A tiny model and 16 training features of uneven lengths (so token-count normalisation matters)."""
    records = make_records(16, seed=7)
    for i, record in enumerate(records):
        record["rationale"] += " so" * (2 * i)
        record["input"] = "so " * (i % 3) + record["input"]
    if student == "t5":
        return build_tiny_seq2seq(tokenizer, "t5", seed=11), tokenise(records, tokenizer)
    model = build_tiny_causal_lm(tokenizer, "llama", seed=11)
    return model, prepare_dss_features(Dataset.from_list(records), tokenizer, model=model)


def main() -> None:
    options = parse_arguments()
    torch.set_num_threads(1)
    tokenizer = make_tokenizer()
    model, features = student_and_features(options.student, tokenizer)
    args = DSSMITrainingArguments(
        output_dir=options.output_dir,
        max_steps=2,
        per_device_train_batch_size=options.per_device,
        gradient_accumulation_steps=options.accumulation,
        optim=options.optim,
        learning_rate=options.learning_rate,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        mi_variant=options.mi_variant,
        dataloader_drop_last=True,
    )
    trainer = DSSMITrainer(model=model, args=args, processing_class=tokenizer, train_dataset=features)
    trainer.train()
    if trainer.is_world_process_zero():
        weights = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        torch.save({name: value.detach().clone() for name, value in weights.items()},
                   os.path.join(options.output_dir, "weights.pt"))  # fmt: skip
        with open(os.path.join(options.output_dir, "log_history.json"), "w") as handle:
            json.dump(
                {
                    "world_size": args.world_size,
                    "accumulation": args.gradient_accumulation_steps,
                    "log_history": trainer.state.log_history,
                },
                handle,
            )
    # As in ddp_train.py: leave without the interpreter's teardown (gloo can hang in its destructor at exit).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
