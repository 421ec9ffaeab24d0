"""Candidate scoring for decoder-only students: the shared prompt cache against one full pass per candidate.

``hf_cotmi.label_confidences`` in candidates mode scores ``log p(candidate + EOS | prompt)`` for every
candidate of every example. Two strategies of :func:`hf_cotmi.causal_confidence.score_candidates`:

- ``cache`` (the default): each batch of prompts runs once, left-padded, with its key-value cache; the cache
  is copied to one row per candidate and only the candidate tokens run on top of it;
- ``full``: one forward pass over prompt + candidate per candidate row (the prompt runs once per candidate;
  the output projection is kept to the candidate positions with ``logits_to_keep``, as in ``cache``).

The student is a Qwen2.5-0.5B-like decoder built from a config (vocabulary 151936, hidden 896, 14 heads, 2
key-value heads, feed-forward 4864; ``--num-layers`` of them) scoring ``--examples`` prompts of
``--prompt-length`` random tokens against ``--candidates`` candidates of 2 to 4 tokens plus EOS (NLI's three
labels by default). The strategies run interleaved in one process, ``--rounds`` times each, under
``torch.no_grad``; the median time of each is reported, with the largest difference between their scores.
The last line is JSON::

    python examples/benchmarks/causal_candidates.py                 # CPU, float32
    python examples/benchmarks/causal_candidates.py --device cuda --num-layers 24 --examples 64
    python examples/benchmarks/causal_candidates.py --smoke         # a tiny model, seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from hf_cotmi.causal_confidence import CANDIDATE_SCORING, score_candidates


def build_student(args: argparse.Namespace) -> Any:
    torch.manual_seed(0)
    if args.smoke:
        config = Qwen2Config(
            vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=64, max_position_embeddings=1024,
        )  # fmt: skip
    else:
        config = Qwen2Config(
            vocab_size=151936, hidden_size=896, num_hidden_layers=args.num_layers, num_attention_heads=14,
            num_key_value_heads=2, intermediate_size=4864, max_position_embeddings=4096,
            tie_word_embeddings=True,
        )  # fmt: skip
    config.eos_token_id = 1
    return Qwen2ForCausalLM(config).to(args.device).eval()


def make_inputs(args: argparse.Namespace, vocab_size: int) -> tuple[list[list[int]], list[list[list[int]]]]:
    generator = torch.Generator().manual_seed(1)

    def tokens(n: int) -> list[int]:
        return torch.randint(2, vocab_size, (n,), generator=generator).tolist()

    lengths = torch.randint(
        args.prompt_length // 2, args.prompt_length + 1, (args.examples,), generator=generator
    )
    prompts = [tokens(int(n)) for n in lengths]
    candidates = [tokens(2 + k % 3) + [1] for k in range(args.candidates)]  # shared, as a label set is
    return prompts, [candidates] * args.examples


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--prompt-length", type=int, default=256)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument(
        "--batch-size", type=int, default=16, help="prompts per pass, candidate rows per pass"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--smoke", action="store_true", help="a tiny model and few rounds: a check, not a figure"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.examples, args.prompt_length, args.rounds = 4, 16, 1
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = build_student(args)
    prompts, candidates = make_inputs(args, model.config.vocab_size)
    times: dict[str, list[float]] = {name: [] for name in CANDIDATE_SCORING}
    scores: dict[str, list[Any]] = {}
    with torch.no_grad():
        for name in CANDIDATE_SCORING:  # warm-up
            score_candidates(
                model, prompts[:2], candidates[:2], pad_id=0, batch_size=args.batch_size, strategy=name
            )
        for _ in range(args.rounds):
            for name in CANDIDATE_SCORING:
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                scores[name] = score_candidates(
                    model, prompts, candidates, pad_id=0, batch_size=args.batch_size, strategy=name
                )
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    difference = max(float(abs(a - b).max()) for a, b in zip(scores["cache"], scores["full"]))
    print(
        f"{args.examples} prompts of up to {args.prompt_length} tokens, {args.candidates} candidates, "
        f"{model.config.num_hidden_layers} layers, {args.device}, median of {args.rounds} rounds"
    )
    for name in CANDIDATE_SCORING:
        print(f"  {name:<6} {medians[name]:.3f} s  ({medians[name] / medians['cache']:.2f} x cache)")
    print(f"  largest score difference between the strategies: {difference:.2e}")
    summary = {
        "median_seconds": medians,
        "full_over_cache": medians["full"] / medians["cache"],
        "max_score_difference": difference,
        "examples": args.examples,
        "prompt_length": args.prompt_length,
        "candidates": args.candidates,
        "num_layers": model.config.num_hidden_layers,
        "device": args.device,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
