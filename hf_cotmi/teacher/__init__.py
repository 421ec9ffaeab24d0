"""Teacher rationale generation: prompts, backends, answer parsing, filters and the resumable writer.

:func:`generate_rationales` (also ``hf-cotmi generate-rationales``) turns a file of inputs and gold labels
into a training file that :func:`hf_cotmi.load_cot_dataset` and ``hf-cotmi train --train-file`` read.
Importing this package is cheap: torch, transformers and openai load when a backend is built.

Examples:
    >>> from hf_cotmi.teacher import parse_teacher_output
    >>> parse_teacher_output("arithmetic", "3 + 4 is 7. The answer is (3 + 4).").label
    '(3 + 4)'
"""

from __future__ import annotations

from .answers import (
    TASKS,
    TeacherAnswer,
    Vote,
    answers_agree,
    normalise_answer,
    parse_teacher_output,
    vote_answers,
)
from .backends import (
    GenerationRequest,
    LocalCausalBackend,
    OpenAICompatibleBackend,
    TeacherBackend,
    TeacherRequestError,
)
from .generate import FILTERS, SUMMARY_FIELDS, GenerationSummary, generate_rationales, read_teacher_inputs
from .prompts import load_prompt_template, render_prompt
from .retrying import RetryPolicy
from .store import SettingsMismatchError

__all__ = [
    "TASKS",
    "FILTERS",
    "SUMMARY_FIELDS",
    "TeacherAnswer",
    "Vote",
    "answers_agree",
    "normalise_answer",
    "parse_teacher_output",
    "vote_answers",
    "GenerationRequest",
    "TeacherBackend",
    "TeacherRequestError",
    "OpenAICompatibleBackend",
    "LocalCausalBackend",
    "GenerationSummary",
    "generate_rationales",
    "read_teacher_inputs",
    "load_prompt_template",
    "render_prompt",
    "RetryPolicy",
    "SettingsMismatchError",
]
