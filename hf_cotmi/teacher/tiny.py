"""A tiny random causal teacher built in code (Llama config, word-level tokenizer, one-line chat template).

For tests, the throughput benchmark and the notebook's smoke mode: it loads and serves like any model
folder (``transformers serve PATH``, ``LocalCausalBackend(PATH)``) but its text is noise. Real teachers
come from ``from_pretrained(name)``.

Examples:
    >>> import tempfile
    >>> folder = save_tiny_causal_teacher(tempfile.mkdtemp())  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TINY_CHAT_TEMPLATE", "save_tiny_causal_teacher"]

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
"""A one-line chat template: ``role: content`` per message, then ``assistant:``."""

_WORDS = (
    "so the answer is premise hypothesis entailment neutral contradiction q a user assistant "
    "how many what where who a an of to in and has have are is was were he she they it apples "
    "0 1 2 3 4 5 6 7 8 9 10 + - * / ( ) . , : ?"
)


def save_tiny_causal_teacher(
    folder: str | os.PathLike[str],
    *,
    extra_words: str = "",
    hidden_size: int = 32,
    num_layers: int = 1,
    seed: int = 0,
) -> str:
    """Build a tiny random Llama (:func:`hf_cotmi.tiny.build_tiny_causal_lm`) with a word-level tokenizer and
    chat template; save it.

    Args:
        folder: where to save model and tokenizer.
        extra_words: more vocabulary (space-separated).
        hidden_size: model width.
        num_layers: decoder layers.
        seed: ``torch.manual_seed`` of the weights.

    Returns:
        ``folder`` as a string.

    Examples:
        >>> import tempfile
        >>> from transformers import AutoModelForCausalLM
        >>> folder = save_tiny_causal_teacher(tempfile.mkdtemp())
        >>> AutoModelForCausalLM.from_pretrained(folder).config.model_type
        'llama'
    """
    from ..tiny import build_tiny_causal_lm, build_word_tokenizer

    tokenizer = build_word_tokenizer([_WORDS, extra_words])
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    model = build_tiny_causal_lm(
        tokenizer,
        "llama",
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=2,
        intermediate_size=2 * hidden_size,
        max_positions=2048,
        seed=seed,
    )
    Path(folder).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
