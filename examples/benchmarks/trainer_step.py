"""A short ``DSSMITrainer.train()`` run on a T5-small-shaped student with random tokens, on any device.

It exercises the whole Trainer path (accelerate, mixed precision, gradient accumulation, logging) rather
than a hand-written step, for plain DSS and DSS + MI in turn, and prints throughput, peak memory (CUDA) and
the logged loss components. The last line is JSON with the MI run's ratios against plain DSS::

    python examples/benchmarks/trainer_step.py --bf16 --steps 30            # on a CUDA machine
    python examples/benchmarks/trainer_step.py --steps 3 --batch-size 2     # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch
from mi_overhead import build_model  # same directory

from hf_cotmi import DSSMITrainer, DSSMITrainingArguments


def random_features(n: int, options: argparse.Namespace) -> list[dict[str, list[int]]]:
    """Feature dicts in the collator's columns (a plain list: no ``datasets`` needed on the GPU machine)."""
    generator = torch.Generator().manual_seed(0)
    vocab = options.vocab_size

    def ids(length: int) -> list[list[int]]:
        rows = torch.randint(2, vocab, (n, length), generator=generator)
        rows[:, -1] = 1  # eos
        return rows.tolist()

    inputs, labels, rationales = (
        ids(options.input_length),
        ids(options.label_length),
        ids(options.rationale_length),
    )
    mask = [1] * options.input_length
    return [
        {
            "input_ids": inputs[i],
            "attention_mask": mask,
            "labels": labels[i],
            "expl_input_ids": inputs[i],
            "expl_attention_mask": mask,
            "rationale_labels": rationales[i],
        }
        for i in range(n)
    ]


class _PadOnly:
    """The collator needs a tokenizer only to pad inputs; all rows here have the same length."""

    pad_token_id = 0
    padding_side = "right"

    def pad(self, features, return_tensors="pt", **kwargs):  # noqa: D401 - the tokenizer protocol
        keys = features[0].keys()
        return {k: torch.tensor([f[k] for f in features]) for k in keys}


def run(mi_loss_weight: float, options: argparse.Namespace) -> dict:
    from hf_cotmi import DSSDataCollator

    device = "cuda" if torch.cuda.is_available() and not options.cpu else "cpu"
    model = build_model(options.vocab_size, device)
    features = random_features(options.batch_size * options.steps, options)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        args = DSSMITrainingArguments(
            output_dir=tmp,
            max_steps=options.steps,
            per_device_train_batch_size=options.batch_size,
            learning_rate=5e-5,
            logging_steps=max(1, options.steps // 3),
            save_strategy="no",
            report_to="none",
            bf16=options.bf16,
            use_cpu=device == "cpu",
            mi_loss_weight=mi_loss_weight,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = DSSMITrainer(
            model=model,
            args=args,
            train_dataset=features,
            data_collator=DSSDataCollator(_PadOnly(), model=model),
        )
        output = trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "mi_loss_weight": mi_loss_weight,
        "train_samples_per_second": output.metrics["train_samples_per_second"],
        "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "last_log": logs[-1] if logs else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--input-length", type=int, default=128)
    parser.add_argument("--label-length", type=int, default=8)
    parser.add_argument("--rationale-length", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=32128)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--cpu", action="store_true")
    options = parser.parse_args(argv)
    warmup = argparse.Namespace(**{**vars(options), "steps": 2})
    run(0.0, warmup)  # pays one-off start-up costs (CUDA context, kernels) outside the compared runs
    results = [run(0.0, options), run(0.1, options)]
    for result in results:
        print(json.dumps(result))
    dss, mi = results
    ratios = {"throughput_ratio": round(mi["train_samples_per_second"] / dss["train_samples_per_second"], 4)}
    if dss["peak_memory_mib"]:
        ratios["peak_memory_ratio"] = round(mi["peak_memory_mib"] / dss["peak_memory_mib"], 4)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
