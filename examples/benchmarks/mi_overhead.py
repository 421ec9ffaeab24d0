"""What the MI term costs on top of plain DSS: training-step time and peak memory.

Three variants of one training step (forward of both passes, backward, AdamW step) on a T5-small-shaped
student built from a config (d_model 512, 6 + 6 layers, vocabulary 32128):

- ``dss``: plain Distilling Step-by-Step (``mi_loss_weight=0``);
- ``naive``: DSS plus the MI term computed as the released code does (both softmaxes materialised);
- ``hf_cotmi``: DSS plus ``hf_cotmi``'s MI term (``mi_loss_weight=0.1``).

With ``--student causal`` the student is a decoder-only Qwen2.5-0.5B-like model (vocabulary 151936, hidden
896, 14 heads, 2 key-value heads, feed-forward 4864, tied embeddings; ``--num-layers`` of them, 2 by default
so that it fits a small machine) and the batch is 4 sequences of a 256-token prompt followed by an 8-token
label or a 128-token rationale. Its variants are ``dss``, ``hf_cotmi`` (both project only the positions that
predict target tokens) and ``full_logits`` (DSS + MI with the output projection over every position, prompt
included, as a model called without ``logits_to_keep`` does).

Time: the variants run interleaved in one process; the median step time of each is reported. Peak memory:
each variant runs a few steps in a fresh process; on CPU the figure is that process's maximum resident
set size (with glibc's mmap threshold fixed, so that freed tensors leave the resident set), on CUDA
``torch.cuda.max_memory_allocated``. The optimizer is AdamW with ``foreach=False``: the
default multi-tensor AdamW allocates temporaries the size of the whole model at ``step()``, which on CPU set
the process's peak for every variant alike and hide what the loss itself costs. The last line is JSON with
the ratios against ``dss``::

    python examples/benchmarks/mi_overhead.py                      # CPU, float32, batch 8
    python examples/benchmarks/mi_overhead.py --device cuda --dtype bf16 --batch-size 64 --rationale-length 256
    python examples/benchmarks/mi_overhead.py --student causal          # CPU, float32, batch 4, 2 layers
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
import time
from contextlib import nullcontext

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM, T5Config, T5ForConditionalGeneration

from hf_cotmi import DSSMITrainer, DSSMITrainingArguments
from hf_cotmi.collator import pad_target_aligned

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling modules, however it is loaded
from measurement_record import variant_figures, write_measurement  # noqa: E402

VARIANTS = ("dss", "naive", "hf_cotmi")
CAUSAL_VARIANTS = ("dss", "hf_cotmi", "full_logits")
MI_WEIGHT = 0.1
# Defaults per student: (batch size, input or prompt length, label length, rationale length, vocabulary)
DEFAULTS = {"seq2seq": (8, 128, 8, 128, 32128), "causal": (4, 256, 8, 128, 151936)}


class NaiveMITrainer(DSSMITrainer):
    """DSS plus the MI term written the way the released code writes it: ``softmax`` of both passes is
    materialised and kept for the backward pass, reduced with ``max`` and fed to ``CrossEntropyLoss``."""

    def _forward(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels = super()._forward(model, batch)
        self._reduced.append(torch.softmax(logits, dim=-1).max(dim=1).values)
        return logits, labels

    def _dss_loss(self, model, inputs, num_items_in_batch):
        self._reduced: list[torch.Tensor] = []
        loss, components, outputs = super()._dss_loss(model, inputs, num_items_in_batch)
        label_side, rationale_side = self._reduced
        mi = nn.CrossEntropyLoss()(rationale_side, label_side.detach())
        components["loss_mi"] = mi.detach().item()
        return loss + MI_WEIGHT * mi, components, outputs


class FullLogitsTrainer(DSSMITrainer):
    """DSS + MI for a decoder-only student with the output projection over every position."""

    def _supports_logits_to_keep(self, model: nn.Module) -> bool:
        return False


def variants_of(options: argparse.Namespace) -> tuple[str, ...]:
    return CAUSAL_VARIANTS if options.student == "causal" else VARIANTS


def build_causal_model(options: argparse.Namespace) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=options.vocab_size,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=options.num_layers,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    return Qwen2ForCausalLM(config).to(options.device)


def make_causal_batch(options: argparse.Namespace) -> dict:
    """Random prompts and targets in the target-aligned layout; a quarter of half the targets is padding."""
    generator = torch.Generator().manual_seed(1)
    vocab, batch = options.vocab_size, options.batch_size

    def part(target_length: int) -> dict:
        rows = []
        for row in range(batch):
            length = target_length - (max(1, target_length // 4) if row >= batch // 2 else 0)
            prompt = torch.randint(2, vocab, (options.input_length,), generator=generator).tolist()
            target = torch.randint(2, vocab, (length,), generator=generator).tolist()
            rows.append({"input_ids": prompt + target, "labels": [-100] * len(prompt) + target})
        return {k: v.to(options.device) for k, v in pad_target_aligned(rows, pad_token_id=0).items()}

    return {"pred": part(options.label_length), "expl": part(options.rationale_length)}


def build_model(vocab_size: int, device: str) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=512,
        d_kv=64,
        d_ff=2048,
        num_layers=6,
        num_decoder_layers=6,
        num_heads=8,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(config).to(device)


def make_batch(options: argparse.Namespace, model: T5ForConditionalGeneration) -> dict:
    """Random token ids of the stated lengths; the last quarter of each target row is padding."""
    generator = torch.Generator().manual_seed(1)
    vocab, batch = options.vocab_size, options.batch_size

    def part(input_length: int, target_length: int) -> dict:
        input_ids = torch.randint(2, vocab, (batch, input_length), generator=generator)
        labels = torch.randint(2, vocab, (batch, target_length), generator=generator)
        labels[batch // 2 :, -max(1, target_length // 4) :] = -100
        out = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": labels,
            "decoder_input_ids": model.prepare_decoder_input_ids_from_labels(labels=labels),
        }
        return {k: v.to(options.device) for k, v in out.items()}

    return {
        "pred": part(options.input_length, options.label_length),
        "expl": part(options.input_length, options.rationale_length),
    }


def make_trainer(
    variant: str, model: nn.Module, output_dir: str, options: argparse.Namespace
) -> DSSMITrainer:
    args = DSSMITrainingArguments(
        output_dir=output_dir,
        report_to="none",
        use_cpu=options.device == "cpu",
        mi_loss_weight=0.0 if variant == "dss" or variant == "naive" else MI_WEIGHT,
        disable_tqdm=True,
    )
    cls = {"naive": NaiveMITrainer, "full_logits": FullLogitsTrainer}.get(variant, DSSMITrainer)
    return cls(model=model, args=args)


def train_step(trainer: DSSMITrainer, model: nn.Module, batch: dict, optimizer, options) -> float:
    autocast = (
        torch.autocast(device_type=options.device, dtype=torch.bfloat16)
        if options.dtype == "bf16"
        else nullcontext()
    )
    _sync(options.device)
    start = time.perf_counter()
    with autocast:
        loss = trainer.compute_loss(model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(options.device)
    return time.perf_counter() - start


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=False)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_child(options: argparse.Namespace) -> None:
    """A fresh process runs a few steps of one variant and prints its peak memory in bytes."""
    model, batch = build_model_and_batch(options)
    optimizer = make_optimizer(model)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(options.child, model, tmp, options)
        if options.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(options.memory_steps):
            train_step(trainer, model, batch, optimizer, options)
    if options.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    print(json.dumps({"variant": options.child, "peak_bytes": peak}))


def build_model_and_batch(options: argparse.Namespace) -> tuple[nn.Module, dict]:
    if options.student == "causal":
        return build_causal_model(options), make_causal_batch(options)
    model = build_model(options.vocab_size, options.device)
    return model, make_batch(options, model)


def peak_memory(variant: str, options: argparse.Namespace) -> int:
    command = [sys.executable, os.path.abspath(__file__), "--child", variant]
    names = ("device", "dtype", "batch_size", "input_length", "label_length", "rationale_length", "student")
    for name in names + ("num_layers",):
        command += [f"--{name.replace('_', '-')}", str(getattr(options, name))]
    command += ["--vocab-size", str(options.vocab_size), "--memory-steps", str(options.memory_steps)]
    # glibc raises its mmap threshold as large blocks are freed, after which freed tensors stay in the heap and
    # the resident-set high-water mark reflects fragmentation rather than live memory. A fixed threshold keeps
    # large tensors in their own mappings, returned to the system when freed.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"the memory run of {variant!r} failed:\n{result.stderr[-4000:]}")
    return int(json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"])


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--student", default="seq2seq", choices=["seq2seq", "causal"])
    parser.add_argument("--num-layers", type=int, default=2, help="decoder layers of the causal student")
    parser.add_argument("--batch-size", type=int, help="default 8 (seq2seq) or 4 (causal)")
    parser.add_argument(
        "--input-length", type=int, help="input (seq2seq, 128) or prompt (causal, 256) tokens"
    )
    parser.add_argument("--label-length", type=int, help="default 8")
    parser.add_argument("--rationale-length", type=int, help="default 128")
    parser.add_argument("--vocab-size", type=int, help="default 32128 (seq2seq) or 151936 (causal)")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--timed-rounds", type=int, default=9, help="timed steps per variant (interleaved)")
    parser.add_argument("--memory-steps", type=int, default=3, help="steps per fresh memory process")
    parser.add_argument(
        "--output", help="also write the result, raw figures, command and machine to this JSON"
    )
    parser.add_argument("--child", choices=sorted(set(VARIANTS + CAUSAL_VARIANTS)), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    names = ("batch_size", "input_length", "label_length", "rationale_length", "vocab_size")
    for name, default in zip(names, DEFAULTS[options.student]):
        if getattr(options, name) is None:
            setattr(options, name, default)
    if options.child:
        run_child(options)
        return {}

    # Memory first: Linux carries a process's resident-set high-water mark across fork and exec, so children
    # started after this process has built its own model would report this process's peak instead of theirs.
    variants = variants_of(options)
    peaks = {v: peak_memory(v, options) for v in variants}
    model, batch = build_model_and_batch(options)
    optimizer = make_optimizer(model)
    times: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {v: make_trainer(v, model, os.path.join(tmp, v), options) for v in variants}
        for variant in variants:
            for _ in range(options.warmup_steps):
                train_step(trainers[variant], model, batch, optimizer, options)
        for _ in range(options.timed_rounds):
            for variant in variants:
                times[variant].append(train_step(trainers[variant], model, batch, optimizer, options))
    median = {v: statistics.median(t) for v, t in times.items()}
    keys = ("student", "device", "dtype", "batch_size", "input_length", "label_length", "rationale_length")
    settings = {k: getattr(options, k) for k in keys + ("vocab_size",)}
    if options.student == "causal":
        settings["num_layers"] = options.num_layers
    print(f"settings: {settings}, torch threads: {torch.get_num_threads()}")
    for v in variants:
        print(f"{v:>11}: median step {median[v] * 1000:8.1f} ms   peak memory {peaks[v] / 2**20:8.1f} MiB")
    if options.student == "causal":
        result = {
            "time_ratio": round(median["hf_cotmi"] / median["dss"], 4),
            "peak_memory_ratio": round(peaks["hf_cotmi"] / peaks["dss"], 4),
            "full_logits_time_ratio": round(median["full_logits"] / median["dss"], 4),
            "full_logits_peak_memory_ratio": round(peaks["full_logits"] / peaks["dss"], 4),
            "memory_saved_vs_full_logits_mib": round((peaks["full_logits"] - peaks["hf_cotmi"]) / 2**20, 1),
        }
    else:
        result = {
            "time_ratio": round(median["hf_cotmi"] / median["dss"], 4),
            "peak_memory_ratio": round(peaks["hf_cotmi"] / peaks["dss"], 4),
            "naive_time_ratio": round(median["naive"] / median["dss"], 4),
            "naive_peak_memory_ratio": round(peaks["naive"] / peaks["dss"], 4),
        }
    print(json.dumps(result))
    if options.output:
        details = {"settings": settings, **variant_figures(median, peaks)}
        given = sys.argv[1:] if argv is None else list(argv)
        write_measurement(options.output, result, script="mi_overhead.py", argv=given, details=details)
    return result


if __name__ == "__main__":
    main()
