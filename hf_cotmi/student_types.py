"""The two kinds of student and how to tell them apart: the one place that decides the layout.

An encoder-decoder student (T5, BART) reads ``<prefix><input>`` with its encoder and predicts the target
with its decoder. A decoder-only student (Llama, Qwen2, GPT-2) reads one sequence
``[BOS] <prefix><input> <target> [EOS]`` and the loss covers the target and EOS only. Features, the
collator and the trainer all ask :func:`resolve_student_type` which layout to use.

Examples:
    >>> resolve_student_type(student_type="causal")
    'causal'
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["STUDENT_TYPES", "resolve_student_type", "ensure_pad_token", "check_chat_template_student"]

logger = logging.getLogger("hf_cotmi")

STUDENT_TYPES: tuple[str, ...] = ("seq2seq", "causal")
"""``"seq2seq"``: encoder-decoder (``AutoModelForSeq2SeqLM``); ``"causal"``: decoder-only
(``AutoModelForCausalLM``)."""


def _config_of(model: Any) -> Any:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(inner, "module", inner)  # a DDP wrapper
    return getattr(inner, "config", None)


def check_chat_template_student(student_type: str) -> None:
    """``chat_template=True`` is for decoder-only students: raise for any other kind.

    Features, confidence and generation all check it here, with one message.

    Raises:
        ValueError: ``student_type`` is not ``"causal"``.

    Examples:
        >>> check_chat_template_student("causal")
        >>> check_chat_template_student("seq2seq")
        Traceback (most recent call last):
        ...
        ValueError: chat_template=True is for decoder-only (causal) students; this student is seq2seq
    """
    if student_type != "causal":
        raise ValueError(
            f"chat_template=True is for decoder-only (causal) students; this student is {student_type}"
        )


def resolve_student_type(model: Any = None, student_type: str | None = None) -> str:
    """``"seq2seq"`` or ``"causal"``: the explicit choice, else the model's ``config.is_encoder_decoder``.

    With neither a model nor a choice the answer is ``"seq2seq"`` (what the library did before it served
    decoder-only students). PEFT and DDP wrappers are looked through.

    Args:
        model: the student, or None.
        student_type: ``"seq2seq"``, ``"causal"`` or None.

    Raises:
        ValueError: an unknown ``student_type``, or one that contradicts the model's config.

    Examples:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10))
        >>> resolve_student_type(model)
        'causal'
    """
    if student_type is not None and student_type not in STUDENT_TYPES:
        raise ValueError(f"student_type={student_type!r} is not supported; expected one of {STUDENT_TYPES}")
    config = _config_of(model) if model is not None else None
    from_model = None
    if config is not None:
        from_model = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
    if student_type is not None and from_model is not None and student_type != from_model:
        raise ValueError(
            f"student_type={student_type!r} but the model ({type(model).__name__}) has "
            f"config.is_encoder_decoder={getattr(config, 'is_encoder_decoder', False)}, which means "
            f"{from_model!r}; leave student_type out to use the model's"
        )
    return student_type or from_model or "seq2seq"


def ensure_pad_token(tokenizer: Any) -> Any:
    """Give a tokenizer without a pad token its EOS token as pad (with a warning), and return it.

    Decoder-only tokenizers (GPT-2, Llama) often have no pad token. hf-cotmi never takes the loss from the
    pad id (padded positions are marked by -100 labels and a zero attention mask), so EOS as pad is safe:
    the EOS that ends each target still carries loss.

    Raises:
        ValueError: the tokenizer has neither a pad nor an EOS token.

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> ensure_pad_token(build_word_tokenizer(["a"])).pad_token
        '<pad>'
    """
    if getattr(tokenizer, "pad_token_id", None) is not None:
        return tokenizer
    eos = getattr(tokenizer, "eos_token", None)
    if eos is None:
        raise ValueError(
            f"the tokenizer ({type(tokenizer).__name__}) has neither a pad token nor an EOS token; "
            "set one, e.g. tokenizer.add_special_tokens({'pad_token': '<pad>'}) and resize the embeddings"
        )
    logger.warning(
        "the tokenizer has no pad token; using its EOS token %r as pad (padding never carries loss here). "
        "Set tokenizer.pad_token yourself to silence this.",
        eos,
    )
    tokenizer.pad_token = eos
    return tokenizer
