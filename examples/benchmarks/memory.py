"""Peak memory and step time of the chunked output projection against stock fine-tuning and unchunked DSS + MI.

Three variants of one training step (forward, backward, AdamW step) per student shape:

- ``finetuning`` (a): stock ``transformers.Trainer`` fine-tuning on the label task alone; its ``compute_loss``
  calls the model with ``labels`` (the model's own loss; a decoder-only model projects every position);
- ``unchunked`` (b): ``DSSMITrainer``, DSS + MI (0.5, 0.5, 0.1) with ``chunked_output_projection=False``;
- ``chunked`` (c): the same with ``chunked_output_projection=True``.

Shapes (the ones of ``mi_overhead.py``, built from configs): ``causal``, a Qwen2.5-0.5B-like decoder
(vocabulary 151936, hidden 896, ``--num-layers`` layers, 2 by default) and ``seq2seq``, T5-small (d_model 512,
6 + 6 layers, vocabulary 32128); batch 4, prompt/input 256, label 8, rationale 128 tokens.

Peak memory: each variant runs ``--memory-steps`` steps in a fresh process (CPU: the process's maximum
resident set size from ``resource.getrusage``, with glibc's mmap threshold fixed so freed tensors leave the
resident set; CUDA: ``torch.cuda.max_memory_allocated``). Time: the variants run interleaved in one process;
the median step of each is reported. The last line is JSON for the causal shape (ratios c/a and c/b), with the
seq2seq ratios under ``seq2seq_*`` keys::

    python examples/benchmarks/memory.py                                   # CPU, float32, both shapes
    python examples/benchmarks/memory.py --device cuda --dtype bf16        # CUDA, bf16 autocast
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measurement_record import variant_figures, write_measurement  # noqa: E402
from mi_overhead import (  # noqa: E402
    build_causal_model,
    build_model,
    make_batch,
    make_causal_batch,
    make_optimizer,
    train_step,
)

from hf_cotmi import DSSMITrainer, DSSMITrainingArguments  # noqa: E402

VARIANTS = ("finetuning", "unchunked", "chunked")
SHAPES = ("seq2seq", "causal")
# Per shape: (vocabulary, input or prompt length)
SHAPE_DEFAULTS = {"seq2seq": (32128, 256), "causal": (151936, 256)}


def shape_options(options: argparse.Namespace, shape: str) -> argparse.Namespace:
    """The namespace ``mi_overhead``'s builders read, for one shape."""
    vocab, input_length = SHAPE_DEFAULTS[shape]
    values = {**vars(options), "student": shape}
    values["vocab_size"] = options.vocab_size or vocab
    values["input_length"] = options.input_length or input_length
    return argparse.Namespace(**values)


def build(shape_opts: argparse.Namespace) -> tuple[nn.Module, dict]:
    if shape_opts.student == "causal":
        return build_causal_model(shape_opts), make_causal_batch(shape_opts)
    model = build_model(shape_opts.vocab_size, shape_opts.device)
    return model, make_batch(shape_opts, model)


def make_trainer(variant: str, model: nn.Module, output_dir: str, opts: argparse.Namespace) -> Trainer:
    common = dict(output_dir=output_dir, report_to="none", use_cpu=opts.device == "cpu", disable_tqdm=True)
    if variant == "finetuning":
        return Trainer(model=model, args=TrainingArguments(**common))
    args = DSSMITrainingArguments(
        **common,
        mi_loss_weight=0.1,
        chunked_output_projection=variant == "chunked",
        output_projection_chunk_size=opts.chunk_size,
    )
    return DSSMITrainer(model=model, args=args)


def inputs_for(variant: str, batch: dict) -> dict:
    """Stock fine-tuning sees the label task only, as a plain batch with ``labels``."""
    return batch["pred"] if variant == "finetuning" else batch


def run_child(opts: argparse.Namespace) -> None:
    """A fresh process runs a few steps of one variant and prints its peak memory in bytes."""
    model, batch = build(opts)
    model.train()
    optimizer = make_optimizer(model)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(opts.child, model, tmp, opts)
        if opts.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(opts.memory_steps):
            train_step(trainer, model, inputs_for(opts.child, batch), optimizer, opts)
    if opts.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    print(json.dumps({"variant": opts.child, "peak_bytes": peak}))


def peak_memory(variant: str, opts: argparse.Namespace) -> int:
    command = [sys.executable, os.path.abspath(__file__), "--child", variant, "--shape", opts.student]
    for name in ("device", "dtype", "batch_size", "input_length", "label_length", "rationale_length"):
        command += [f"--{name.replace('_', '-')}", str(getattr(opts, name))]
    command += ["--num-layers", str(opts.num_layers), "--memory-steps", str(opts.memory_steps)]
    command += ["--chunk-size", str(opts.chunk_size), "--vocab-size", str(opts.vocab_size)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # see mi_overhead.py: freed tensors leave the RSS
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"the memory run of {variant!r} ({opts.student}) failed:\n{result.stderr[-4000:]}")
    return int(json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"])


def measure_times(opts: argparse.Namespace) -> dict[str, float]:
    model, batch = build(opts)
    model.train()
    optimizer = make_optimizer(model)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {v: make_trainer(v, model, os.path.join(tmp, v), opts) for v in VARIANTS}
        for variant in VARIANTS:
            for _ in range(opts.warmup_steps):
                train_step(trainers[variant], model, inputs_for(variant, batch), optimizer, opts)
        for _ in range(opts.timed_rounds):
            for variant in VARIANTS:
                times[variant].append(
                    train_step(trainers[variant], model, inputs_for(variant, batch), optimizer, opts)
                )
    return {v: statistics.median(t) for v, t in times.items()}


def ratios(peaks: dict[str, int], median: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}peak_memory_vs_finetuning": round(peaks["chunked"] / peaks["finetuning"], 4),
        f"{prefix}peak_memory_vs_unchunked": round(peaks["chunked"] / peaks["unchunked"], 4),
        f"{prefix}time_vs_unchunked": round(median["chunked"] / median["unchunked"], 4),
        f"{prefix}unchunked_peak_memory_vs_finetuning": round(peaks["unchunked"] / peaks["finetuning"], 4),
        f"{prefix}time_vs_finetuning": round(median["chunked"] / median["finetuning"], 4),
        f"{prefix}memory_saved_vs_unchunked_mib": round((peaks["unchunked"] - peaks["chunked"]) / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES, help="causal runs last")
    parser.add_argument("--num-layers", type=int, default=2, help="decoder layers of the causal student")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--input-length", type=int, help="input (seq2seq) or prompt (causal) tokens; 256")
    parser.add_argument("--label-length", type=int, default=8)
    parser.add_argument("--rationale-length", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, help="default 151936 (causal) and 32128 (seq2seq)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="output_projection_chunk_size (tokens)")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--timed-rounds", type=int, default=5, help="timed steps per variant (interleaved)")
    parser.add_argument("--memory-steps", type=int, default=2, help="steps per fresh memory process")
    parser.add_argument(
        "--output", help="also write the result, raw figures, command and machine to this JSON"
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--shape", choices=SHAPES, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        run_child(shape_options(options, options.shape))
        return {}

    result: dict[str, float] = {}
    details: dict[str, dict] = {}
    shapes = sorted(options.shapes, key=lambda s: s == "causal")  # the causal figures make the last line
    # Memory first, every child before this process builds a model: Linux carries the resident-set
    # high-water mark across fork and exec.
    peaks = {s: {v: peak_memory(v, shape_options(options, s)) for v in VARIANTS} for s in shapes}
    for shape in shapes:
        opts = shape_options(options, shape)
        median = measure_times(opts)
        settings = {
            k: getattr(opts, k)
            for k in (
                "device",
                "dtype",
                "batch_size",
                "input_length",
                "label_length",
                "rationale_length",
                "vocab_size",
                "chunk_size",
            )
        }
        if shape == "causal":
            settings["num_layers"] = opts.num_layers
        load = os.getloadavg()
        print(f"{shape}: {settings}, torch threads {torch.get_num_threads()}, load average {load[0]:.2f}")
        for v in VARIANTS:
            print(
                f"  {v:>10}: median step {median[v] * 1000:9.1f} ms   peak memory {peaks[shape][v] / 2**20:8.1f} MiB"
            )
        result.update(ratios(peaks[shape], median, "" if shape == "causal" else "seq2seq_"))
        details[shape] = {
            "settings": settings,
            **variant_figures(median, peaks[shape]),
            "load_average_1_min": round(load[0], 2),
        }
    if "causal" in shapes:  # causal keys first, as the issue writes them
        result = {k: result[k] for k in sorted(result, key=lambda k: k.startswith("seq2seq_"))}
    print(json.dumps(result))
    if options.output:
        given = sys.argv[1:] if argv is None else list(argv)
        write_measurement(options.output, result, script="memory.py", argv=given, details=details)
    return result


if __name__ == "__main__":
    main()
