"""Train a tiny decoder-only DSS + MI student for a few steps and write the log history as JSON.

Run as one process (``python ddp_train_causal.py OUT 4``) or under
``torchrun --nproc_per_node 2 ddp_train_causal.py OUT 2``: the per-device batch size is the second argument,
so both give the same global batch. A third argument ``fsdp`` asks for FSDP2 through the Trainer, which
``DSSMITrainingArguments`` refuses on the CPU (accelerate would train with DDP instead); ``chunked`` trains
with ``chunked_output_projection=True``.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from tiny_task import make_records, make_tokenizer  # noqa: E402

from hf_cotmi import (  # noqa: E402
    DSSMITrainer,
    DSSMITrainingArguments,
    build_tiny_causal_lm,
    prepare_dss_features,
)


def main() -> None:
    output_dir, per_device = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "ddp"
    torch.set_num_threads(1)
    tokenizer = make_tokenizer()
    records = make_records(16, seed=7)
    for i, record in enumerate(records):  # uneven lengths: token-count normalisation matters
        record["rationale"] += " so" * (2 * i)
        record["input"] = "so " * (i % 3) + record["input"]
    model = build_tiny_causal_lm(tokenizer, "llama", seed=11)
    features = prepare_dss_features(Dataset.from_list(records), tokenizer, model=model)
    extra = {}
    if mode == "fsdp":
        extra = dict(
            fsdp=True, fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}
        )
    args = DSSMITrainingArguments(
        output_dir=output_dir,
        max_steps=3,
        per_device_train_batch_size=per_device,
        # evaluation in batches of 4 alone and 2 per process: other batches, the same losses (means over the set)
        per_device_eval_batch_size=per_device,
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
        generation_max_length=4,
        chunked_output_projection=mode == "chunked",
        **extra,
    )
    trainer = DSSMITrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=features,
        eval_dataset=features.select(range(7)),  # the second process repeats an example in its last batch
    )
    trainer.train()
    # FSDP2 turns parameters into DTensors sharded over the processes: record that it really ran.
    sharded = any(type(p).__name__ == "DTensor" for p in trainer.model_wrapped.parameters())
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        with open(os.path.join(output_dir, "log_history.json"), "w") as handle:
            json.dump(
                {
                    "world_size": args.world_size,
                    "log_history": trainer.state.log_history,
                    "eval": metrics,
                    "fsdp_enabled": bool(trainer.is_fsdp_enabled),
                    "sharded": sharded,
                },
                handle,
            )
    # As in ddp_train.py: leave without the interpreter's teardown (gloo can hang in its destructor at exit).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
