"""``hf-cotmi generate-rationales``: its options (one dataclass) and the function the CLI calls.

Examples:
    >>> args = GenerateRationalesArguments(input_file="in.jsonl", output_file="out.jsonl", teacher_model="m")
    >>> args.task, args.filter, args.num_samples
    ('generic', 'keep', 1)
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .answers import TASKS
from .generate import FILTERS, GenerationSummary
from .options import (
    check_max_records,
    check_output_file,
    check_positive,
    check_request_timeout,
    check_sampling,
    refuse_other_teachers_options,
)
from .retrying import RetryPolicy
from .store import SettingsMismatchError

__all__ = [
    "GenerateRationalesArguments",
    "build_generate_rationales_parser",
    "check_option_values",
    "generate_rationales_command",
]

DESCRIPTION = (
    "Ask a teacher (an OpenAI-compatible server with --base-url and --model, or a local Hugging Face causal "
    "model with --teacher-model) for few-shot chain-of-thought rationales of each input, parse and check "
    "its answers, and append them to a JSON Lines file that 'hf-cotmi train --train-file' reads. Rerunning "
    "the same command continues where it stopped. The last line printed is a JSON object with the counts "
    "total, parsed, unparsable, agreed, dropped, written, retries."
)


@dataclass
class GenerateRationalesArguments:
    """Options of ``hf-cotmi generate-rationales`` (see :func:`hf_cotmi.generate_rationales`).

    Examples:
        >>> GenerateRationalesArguments(concurrency=8).concurrency
        8
    """

    input_file: str | None = field(
        default=None,
        metadata={
            "help": "Inputs (.jsonl, .json, .csv, .parquet) with an input column and optionally a label column."
        },
    )
    output_file: str | None = field(
        default=None,
        metadata={"help": "JSON Lines training file to write (.jsonl, or .json); appended to (resumed) when it "
                  "exists."},
    )  # fmt: skip
    base_url: str | None = field(
        default=None,
        metadata={"help": "Root of an OpenAI-compatible API (vLLM, TGI, llama.cpp, transformers serve, a hosted "
                  "API), e.g. http://127.0.0.1:8000/v1. Needs --model."},
    )  # fmt: skip
    model: str | None = field(default=None, metadata={"help": "Model name on the server (with --base-url)."})
    teacher_model: str | None = field(
        default=None, metadata={"help": "A local causal teacher instead of a server: Hub name or folder."}
    )
    task: str = field(
        default="generic",
        metadata={"help": "Prompt, answer parsing and normalisation.", "choices": list(TASKS)},
    )
    filter: str = field(
        default="keep",
        metadata={"help": "Rationales whose answer disagrees with the gold label: keep, mark (agrees_with_label "
                  "column) or drop (to the rejects file).", "choices": list(FILTERS)},
    )  # fmt: skip
    num_samples: int = field(
        default=1, metadata={"help": "Samples per input (separate requests) for self-consistency voting."}
    )
    concurrency: int = field(default=4, metadata={"help": "Server requests in flight at once."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest completion, in tokens."})
    temperature: float | None = field(
        default=None, metadata={"help": "Sampling temperature (default: 0 for one sample, 0.7 for several)."}
    )
    top_p: float | None = field(default=None, metadata={"help": "Nucleus sampling (default: the teacher's)."})
    seed: int = field(default=0, metadata={"help": "Base seed of sampled requests."})
    api: str = field(
        default="chat",
        metadata={"help": "chat: the server's or model's chat template; completions: the raw prompt (base models).",
                  "choices": ["chat", "completions"]},
    )  # fmt: skip
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Environment variable holding the API key (never logged or written)."},
    )
    template_file: str | None = field(
        default=None, metadata={"help": "Your own prompt template: a text file with {input} once."}
    )
    chat_template_file: str | None = field(
        default=None, metadata={"help": "Jinja chat template for a local teacher whose tokenizer has none."}
    )
    rejects_file: str | None = field(
        default=None, metadata={"help": "Where rejected records go (default: <output stem>.rejects.jsonl)."}
    )
    force: bool = field(
        default=False,
        metadata={"help": "Append even when the output was made with other result-changing settings, or from "
                  "replies of another model than the server's replies now name."},
    )  # fmt: skip
    input_column: str = field(default="input", metadata={"help": "Input column of the input file."})
    label_column: str = field(default="label", metadata={"help": "Gold label column (optional in the file)."})
    max_records: int | None = field(default=None, metadata={"help": "Use only the first N input records."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call of a local teacher."})
    device: str | None = field(
        default=None, metadata={"help": "Device of a local teacher (default: CUDA when available)."}
    )
    request_timeout: float = field(
        default=120.0,
        metadata={"help": "Seconds a server request may take in all (connecting, the teacher's generation, the "
                  "whole reply) before it is given up on and retried (inf, or above threading.TIMEOUT_MAX, "
                  "some 292 years: no limit)."},
    )  # fmt: skip
    max_retries: int = field(
        default=6,
        metadata={"help": "Retries per request on timeouts, connection errors, 429 and 5xx (not 501, 505)."},
    )
    max_retry_after: float = field(
        default=300.0,
        metadata={"help": "Longest wait, in seconds, a server's Retry-After header can ask for; a longer one is "
                  "capped to this, with a warning (inf: wait as long as the server asks)."},
    )  # fmt: skip
    no_progress: bool = field(default=False, metadata={"help": "Hide the progress bar."})

    def __post_init__(self) -> None:
        """Refuse, before any file or model is read, a value that :func:`hf_cotmi.generate_rationales` would
        refuse later, and an option the chosen kind of teacher does not read; the command line turns the
        ``ValueError`` into a usage error naming the flag (``argument --batch-size: ...``).

        Examples:
            >>> GenerateRationalesArguments(teacher_model="m", batch_size=0)
            Traceback (most recent call last):
            ...
            ValueError: batch_size=0 must be a positive integer
        """
        check_option_values(vars(self))


def check_option_values(options: dict[str, Any]) -> None:
    """Check the values of ``generate-rationales`` options (the :class:`GenerateRationalesArguments` fields).

    Raises:
        ValueError: an ``output_file`` that ``hf-cotmi train --train-file`` would not read as JSON Lines
            (:func:`~hf_cotmi.teacher.options.check_output_file`), a count that is not positive
            (``num_samples``, ``max_new_tokens``, ``batch_size``, ``concurrency``), a negative ``max_records`` or
            ``max_retries``, a sampling or waiting value out of range, or an option that the teacher given
            (``base_url`` or ``teacher_model``) does not read; the message starts with the option's field name.

    Examples:
        >>> try:
        ...     check_option_values({**vars(GenerateRationalesArguments()), "base_url": "u", "batch_size": 4})
        ... except ValueError as error:
        ...     print(str(error).split(" only")[0])
        batch_size=4 (--batch-size) is read by a local teacher (teacher_model)
    """
    if options.get("output_file") is not None:
        check_output_file(options["output_file"])
    for name in ("num_samples", "max_new_tokens", "batch_size", "concurrency"):
        check_positive(name, options[name])
    check_max_records(options["max_records"])
    temperature = options["temperature"]
    check_sampling(0.0 if temperature is None else temperature, options["top_p"])
    RetryPolicy(max_retries=options["max_retries"], max_retry_after=options["max_retry_after"])
    check_request_timeout(options["request_timeout"])
    if options["base_url"] or options["teacher_model"]:
        refuse_other_teachers_options(options, server=bool(options["base_url"]))


def build_generate_rationales_parser(prog: str = "hf-cotmi generate-rationales") -> Any:
    """The command's parser, built as every ``hf-cotmi`` command's is: one-line ``CLIUsageError`` errors,
    ``--config FILE.yaml`` (see :func:`hf_cotmi.command_line.parse_command_line`).

    Examples:
        >>> help_text = build_generate_rationales_parser().format_help()
        >>> "--num-samples" in help_text and "--config" in help_text
        True
    """
    from ..command_line import CommonArguments, build_argument_parser

    return build_argument_parser(
        [GenerateRationalesArguments, CommonArguments],
        prog=prog,
        description=DESCRIPTION,
        epilog="--debug (a bare flag) shows the traceback of an error and library logging.",
    )


def _parse(argv: Sequence[str]) -> GenerateRationalesArguments:
    from ..command_line import parse_command_line
    from ..run_arguments import CLIUsageError

    args, _ = parse_command_line(build_generate_rationales_parser(), argv)
    if not args.input_file or not args.output_file:
        raise CLIUsageError("--input-file and --output-file are required")
    if bool(args.base_url) == bool(args.teacher_model):
        raise CLIUsageError("give one teacher: --base-url URL --model NAME, or --teacher-model NAME_OR_PATH")
    if args.base_url and not args.model:
        raise CLIUsageError("--base-url needs --model: the model name on the server")
    if args.teacher_model and args.model:
        raise CLIUsageError(
            "--model names a server's model (with --base-url); a local teacher is --teacher-model"
        )
    return args


def generate_rationales_command(argv: Sequence[str], debug: bool = False) -> int:
    """Run ``hf-cotmi generate-rationales``; the last line printed is the JSON summary of the counts.

    Returns 0 when done. When the run stops (a request failed for good, a write error, Ctrl-C), the summary
    is printed, then the error propagates (the CLI prints it on one line and exits 1, or 130 for Ctrl-C);
    rerunning the same command continues.

    Examples:
        >>> generate_rationales_command(["--input-file", "in.jsonl"])  # doctest: +SKIP
    """
    from ..run_arguments import plural
    from .generate import generate_rationales

    args = _parse(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    if debug:
        logging.getLogger("hf_cotmi").setLevel(logging.INFO)
    try:
        summary = generate_rationales(
            args.input_file,
            args.output_file,
            base_url=args.base_url,
            model=args.model,
            teacher_model=args.teacher_model,
            task=args.task,
            template_file=args.template_file,
            filter=args.filter,
            num_samples=args.num_samples,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            concurrency=args.concurrency,
            batch_size=args.batch_size,
            api=args.api,
            api_key_env=args.api_key_env,
            request_timeout=args.request_timeout,
            max_retries=args.max_retries,
            max_retry_after=args.max_retry_after,
            seed=args.seed,
            rejects_file=args.rejects_file,
            force=args.force,
            input_column=args.input_column,
            label_column=args.label_column,
            max_records=args.max_records,
            device=args.device,
            chat_template_file=args.chat_template_file,
            progress=not args.no_progress,
        )
    except BaseException as error:  # a teacher's error, a full disk, Ctrl-C: what the files hold is shown
        partial = getattr(error, "summary", None)
        if partial is not None:
            # a reply naming another model: a rerun against the same server is refused again
            advice = "" if isinstance(error, SettingsMismatchError) else "; rerun to continue"
            print(
                f"stopped: {partial.parsed + partial.unparsable} of {plural(partial.total, 'record')} done{advice}"
            )
            print(json.dumps(partial.counts()))
            sys.stdout.flush()
        raise
    print(_summary_line(summary))
    print(json.dumps(summary.counts()))
    return 0


def _summary_line(summary: GenerationSummary) -> str:
    """The line the command prints before the JSON counts: what this run wrote, what the files now hold (an
    earlier run's records included), how many an earlier run had done, and the mean self-consistency
    agreement over the files' parsed records.

    Examples:
        >>> summary = GenerationSummary(total=6, parsed=3, unparsable=3, written=3, resumed=6, agreement_rate=1.0,
        ...                             output_file="gen.jsonl", rejects_file="gen.rejects.jsonl")
        >>> for part in _summary_line(summary).split("; "):
        ...     print(part)
        this run wrote 0 records (gen.jsonl now holds 3, gen.rejects.jsonl 3)
        6 were done by an earlier run
        mean self-consistency agreement 1.000
    """
    from ..run_arguments import plural

    rate = "n/a" if summary.agreement_rate is None else f"{summary.agreement_rate:.3f}"
    earlier = ""
    if summary.resumed:
        earlier = f"; {summary.resumed} {'was' if summary.resumed == 1 else 'were'} done by an earlier run"
    return (
        f"this run wrote {plural(summary.new_records, 'record')} ({summary.output_file} now holds "
        f"{summary.written}, {summary.rejects_file} {summary.unparsable + summary.dropped}){earlier}; "
        f"mean self-consistency agreement {rate}"
    )
