#!/usr/bin/env python3
"""Teacher rationale generation throughput: ``transformers serve`` over HTTP against the local backend.

Builds a small random Llama teacher in code (or takes ``--teacher PATH``), writes ``--examples`` arithmetic
questions, and times :func:`hf_cotmi.generate_rationales` four ways in this one process, same prompts,
same greedy decoding and ``--max-new-tokens``:

- ``serve``: a real ``transformers serve`` on 127.0.0.1, ``--concurrency`` requests in flight;
- ``serve_sequential``: the same server, one request at a time (the baseline for ``serve``);
- ``local``: the local backend, ``--batch-size`` prompts per left-padded ``generate`` call;
- ``local_unbatched``: the local backend, one prompt per call (the baseline for ``local``).

Each run writes to a fresh output file (no resuming). Figures are examples per second and seconds per
1000 examples; the last line printed is JSON with them and the ratios (above 1: faster than the baseline).
A random teacher's text is noise, so nearly every record lands in the rejects file: the work (prompt,
generation, parsing, writing) is the same as for a real teacher of this size.

    python examples/benchmarks/teacher_throughput.py --examples 200 --max-new-tokens 32
    python examples/benchmarks/teacher_throughput.py --smoke      # a few seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_cotmi import generate_rationales
from hf_cotmi.teacher import LocalCausalBackend
from hf_cotmi.teacher.serve import served_by_transformers
from hf_cotmi.teacher.tiny import save_tiny_causal_teacher

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling modules, however it is loaded
from measurement_record import write_measurement  # noqa: E402


def _time_run(inputs: Path, output: Path, **options: Any) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    summary = generate_rationales(inputs, output, task="arithmetic", progress=False, **options)
    seconds = time.perf_counter() - started
    if summary.parsed + summary.unparsable != summary.total:
        raise RuntimeError(f"{output}: not every record was done: {summary.counts()}")
    return seconds, summary.counts()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and prints as the last line) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden-size", type=int, default=64, help="width of the built teacher")
    parser.add_argument("--layers", type=int, default=2, help="layers of the built teacher")
    parser.add_argument("--teacher", default=None, help="a causal model folder instead of the built one")
    parser.add_argument(
        "--base-url", default=None, help="a transformers serve already serving --teacher (default: start one)"
    )
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--smoke", action="store_true", help="8 examples, 4 new tokens")
    parser.add_argument("--output", help="also write the result, command and machine to this JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        args.examples, args.max_new_tokens = 8, 4

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="teacher-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = args.teacher or save_tiny_causal_teacher(
        work / "teacher", hidden_size=args.hidden_size, num_layers=args.layers, extra_words="what plus"
    )
    inputs = work / "inputs.jsonl"
    with open(inputs, "w", encoding="utf-8") as handle:
        for a in range(args.examples):
            handle.write(json.dumps({"input": f"What is {a} plus {a + 2}?", "label": str(2 * a + 2)}) + "\n")

    runs: dict[str, float] = {}
    common = {"max_new_tokens": args.max_new_tokens}
    warmup = work / "warmup.jsonl"
    with open(inputs, encoding="utf-8") as source, open(warmup, "w", encoding="utf-8") as target:
        target.writelines(source.readlines()[:4])
    if args.base_url and not args.teacher:
        parser.error("--base-url needs --teacher: the model folder that server serves")
    serving = (
        contextlib.nullcontext(args.base_url)
        if args.base_url
        else served_by_transformers(folder, log_path=work / "serve.log")
    )
    with serving as url:
        _time_run(
            warmup, work / "warm-serve.jsonl", base_url=url, model=folder, **common
        )  # first-request costs
        runs["serve"], _ = _time_run(
            inputs, work / "serve.jsonl", base_url=url, model=folder, concurrency=args.concurrency, **common
        )
        runs["serve_sequential"], _ = _time_run(
            inputs, work / "serve-seq.jsonl", base_url=url, model=folder, concurrency=1, **common
        )
    # the model is loaded once, outside the timed runs (the server had loaded it before its runs too)
    batched = LocalCausalBackend(folder, batch_size=args.batch_size, device="cpu", **common)
    unbatched = LocalCausalBackend(folder, batch_size=1, device="cpu", model=batched.model, **common)
    _time_run(warmup, work / "warm-local.jsonl", backend=batched)
    runs["local"], _ = _time_run(inputs, work / "local.jsonl", backend=batched)
    runs["local_unbatched"], _ = _time_run(inputs, work / "local-1.jsonl", backend=unbatched)

    import torch

    result: dict[str, Any] = {
        "examples": args.examples,
        "max_new_tokens": args.max_new_tokens,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "teacher": "built" if args.teacher is None else args.teacher,
        "cpu_threads": torch.get_num_threads(),  # what generation used (os.cpu_count() is the machine's)
    }
    for name, seconds in runs.items():
        result[f"{name}_examples_per_s"] = round(args.examples / seconds, 2)
        result[f"{name}_s_per_1000"] = round(1000 * seconds / args.examples, 1)
    result["serve_concurrency_speedup"] = round(runs["serve_sequential"] / runs["serve"], 2)
    result["local_batching_speedup"] = round(runs["local_unbatched"] / runs["local"], 2)
    result["local_over_serve"] = round(runs["serve"] / runs["local"], 2)
    for name, seconds in runs.items():
        print(
            f"{name:>18}: {args.examples / seconds:8.2f} examples/s  ({1000 * seconds / args.examples:7.1f} s per 1000)"
        )
    print(json.dumps(result))
    if args.output:
        given = sys.argv[1:] if argv is None else list(argv)
        seconds = {name: round(value, 6) for name, value in runs.items()}
        write_measurement(
            args.output, result, script="teacher_throughput.py", argv=given, details={"seconds": seconds}
        )
    return result


if __name__ == "__main__":
    main()
