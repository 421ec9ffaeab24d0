"""Generation from a distilled student's two tasks: labels, their confidences and rationales, for raw text.

:func:`generate_texts` generates greedily from ``prefix + text`` (a decoder-only student from its
left-padded prompts, with only the new tokens decoded); :func:`predict_texts` gives each text its label,
the label's confidence (:func:`hf_cotmi.label_confidences`) and a rationale. ``hf-cotmi predict`` and the
demo's examples go through them (:func:`hf_cotmi.pipeline.run_prediction`).

Examples:
    >>> from hf_cotmi import build_tiny_seq2seq, build_word_tokenizer
    >>> tok = build_word_tokenizer(["predict: a cat sleeps", "yes no"])
    >>> model = build_tiny_seq2seq(tok, "t5")
    >>> len(generate_texts(model, tok, ["a cat sleeps"], prefix="predict: ", max_new_tokens=2))
    1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .prefixes import EXPLAIN_PREFIX, PREDICT_PREFIX
from .student_types import check_chat_template_student, resolve_student_type
from .students import eos_token_ids, generation_prompt_limit, stop_at_eos_kwargs

__all__ = ["generate_texts", "predict_texts"]


def generate_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    prefix: str,
    max_new_tokens: int,
    batch_size: int = 16,
    max_input_length: int | None = None,
    chat_template: bool = False,
) -> list[str]:
    """Greedy generation from ``prefix + text`` for each text, decoded without special tokens.

    A decoder-only student generates from its left-padded prompts (tokenised as training tokenises them,
    as a chat user turn with ``chat_template=True``) and only the new tokens are decoded; its prompts are cut
    (the end of the input goes) to leave ``max_new_tokens`` free in its context
    (:func:`hf_cotmi.students.generation_prompt_limit`).

    Raises:
        ValueError: ``max_new_tokens`` alone fills a decoder-only student's context.

    Examples:
        >>> # generate_texts(model, tok, ["tom has 3 apples ..."], prefix=EXPLAIN_PREFIX, max_new_tokens=64)
    """
    import torch

    student_type = resolve_student_type(model)
    if chat_template:
        check_chat_template_student(student_type)
    causal = student_type == "causal"
    if causal:  # the generated tokens follow the prompt in the student's context: leave them room
        max_input_length = generation_prompt_limit(model, tokenizer, max_new_tokens, max_input_length)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        for start in range(0, len(texts), batch_size):
            chunk = [prefix + text for text in texts[start : start + batch_size]]
            if causal:
                outputs += _generate_causal_texts(
                    model, tokenizer, chunk, max_new_tokens, max_input_length, chat_template, start
                )
                continue
            encoded = tokenizer(
                chunk,
                return_tensors="pt",
                padding=True,
                truncation=max_input_length is not None,
                max_length=max_input_length,
            )
            encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
            with torch.no_grad():
                ids = model.generate(**encoded, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
            outputs += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    finally:
        model.train(was_training)
    return outputs


def _generate_causal_texts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    max_input_length: int | None,
    chat_template: bool = False,
    first_index: int = 0,
) -> list[str]:
    """Greedy generation of a decoder-only student from left-padded prompts; the prompt is cut off.

    Generation stops at the generation config's EOS; where that names none, at the model config's or the
    tokenizer's (the EOS that ends every training target), as :func:`hf_cotmi.label_confidences` does.
    With prompt-learning adapters the prompts go in groups (:func:`hf_cotmi.causal_confidence.generation_groups`).
    """
    import torch

    from .causal_confidence import causal_prompts, generate_in_groups

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt_ids = causal_prompts(
        tokenizer, prompts, max_input_length, chat_template=chat_template, first_index=first_index
    )
    texts = [""] * len(prompt_ids)
    stop_at_eos = stop_at_eos_kwargs(model, eos_token_ids(model, tokenizer))
    with torch.no_grad():
        for rows, ids, width in generate_in_groups(
            model,
            prompt_ids,
            pad_id=pad_id,
            max_new_tokens=max_new_tokens,
            num_beams=1,
            do_sample=False,
            **stop_at_eos,
        ):
            for row, text in zip(rows, tokenizer.batch_decode(ids[:, width:], skip_special_tokens=True)):
                texts[row] = text.strip()
    return texts


# the column predict_texts hands label_confidences each text's own candidates in
_CANDIDATES_COLUMN = "candidates"


def _label_task_rows(
    texts: Sequence[str],
    label_candidates: Sequence[str] | None,
    candidates_per_text: Sequence[Sequence[str]] | None,
) -> tuple[dict[str, list], list[str] | str | None]:
    """The rows :func:`hf_cotmi.label_confidences` scores for ``texts`` and its ``label_candidates``: the
    shared list, or the name of the column holding each text's own candidates.

    Raises:
        ValueError: both kinds of candidates given, or not one list of candidates per text.

    Examples:
        >>> _label_task_rows(["q"], None, [["sea", "tree"]])
        ({'input': ['q'], 'label': [''], 'candidates': [['sea', 'tree']]}, 'candidates')
        >>> _label_task_rows(["q"], ["yes", "no"], None)
        ({'input': ['q'], 'label': ['']}, ['yes', 'no'])
    """
    rows: dict[str, list] = {"input": list(texts), "label": [""] * len(texts)}
    if candidates_per_text is None:
        return rows, list(label_candidates) if label_candidates else None
    if label_candidates:
        raise ValueError("give label_candidates (shared by all texts) or candidates_per_text, not both")
    if len(candidates_per_text) != len(texts):
        raise ValueError(
            f"candidates_per_text has {len(candidates_per_text)} lists for {len(texts)} texts; expected one per text"
        )
    rows[_CANDIDATES_COLUMN] = [list(choices) for choices in candidates_per_text]
    return rows, _CANDIDATES_COLUMN


def predict_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    predict_prefix: str = PREDICT_PREFIX,
    explain_prefix: str = EXPLAIN_PREFIX,
    label_max_new_tokens: int = 64,
    rationale_max_new_tokens: int = 256,
    confidence: str | None = None,
    label_candidates: Sequence[str] | None = None,
    batch_size: int = 16,
    max_input_length: int | None = None,
    chat_template: bool = False,
    candidates_per_text: Sequence[Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """Label, confidence and rationale of a distilled student for each text.

    The label comes from the label task (``predict_prefix``: generated, or the best candidate in candidates
    mode), its confidence from :func:`hf_cotmi.label_confidences`, the rationale from greedy generation on
    the rationale task (``explain_prefix``).

    ``confidence`` is a mode of :func:`hf_cotmi.label_confidences`: by default ``"candidates"`` when
    ``label_candidates`` is given, else ``"sequence"``; candidates beside a generation mode are refused.
    In candidates mode each row also holds ``generated_label``, the label greedy generation gives (what
    training's ``test_accuracy`` counts, and what ``pipeline("text-generation")`` answers), since the most
    likely candidate need not be it. ``candidates_per_text`` gives each text its own candidates instead of
    the shared ``label_candidates`` (a multiple-choice question's choices, as CQA's ``choices`` column).

    Returns:
        ``[{"input", "label", "confidence", "rationale"}, ...]``, with ``"generated_label"`` in candidates mode.

    Examples:
        >>> # predict_texts(model, tok, ["tom has 3 apples . tom buys 4 more . how many ..."])
        >>> # [{'input': '...', 'label': '7', 'confidence': 0.93, 'rationale': '3 + 4 = 7 . ...'}]
        >>> # predict_texts(model, tok, ["where do fish live?"], candidates_per_text=[["sea", "tree"]])
        >>> # [{'input': '...', 'label': 'sea', 'confidence': 0.81, 'rationale': '...', 'generated_label': 'sea'}]
    """
    from .confidence import label_confidences

    if not texts:
        return []
    rows_in, candidates = _label_task_rows(texts, label_candidates, candidates_per_text)
    mode = confidence or ("candidates" if candidates else "sequence")
    result = label_confidences(
        model,
        tokenizer,
        rows_in,
        mode=mode,  # type: ignore[arg-type]
        label_candidates=candidates,
        prefix=predict_prefix,
        batch_size=batch_size,
        max_new_tokens=label_max_new_tokens if mode != "candidates" else None,
        max_source_length=max_input_length,
        chat_template=chat_template,
    )
    generation = {
        "batch_size": batch_size,
        "max_input_length": max_input_length,
        "chat_template": chat_template,
    }
    rationales = generate_texts(
        model, tokenizer, texts, prefix=explain_prefix, max_new_tokens=rationale_max_new_tokens, **generation
    )
    rows = [
        {"input": text, "label": label, "confidence": float(conf), "rationale": rationale}
        for text, label, conf, rationale in zip(texts, result.predictions, result.confidences, rationales)
    ]
    if mode == "candidates":  # the candidate ranked first is not necessarily what the student generates
        generated = generate_texts(
            model, tokenizer, texts, prefix=predict_prefix, max_new_tokens=label_max_new_tokens, **generation
        )
        for row, label in zip(rows, generated):
            row["generated_label"] = label
    return rows
