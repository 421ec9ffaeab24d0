"""Tokenise one DSS task for a decoder-only student: prompt and target in one sequence.

Each example becomes ``[BOS] <prompt> <target> [EOS]`` (BOS as :func:`leading_special_ids` finds it) with
``labels`` equal to the ids on the target and EOS and ``-100`` on every prompt token, so only the target
carries loss (the completion-only loss of TRL).
With ``chat_template=True`` the prompt is rendered as a user turn plus the assistant header
(``add_generation_prompt=True``) and the target as the assistant turn, up to and including the tokenizer's
EOS token (added when the template does not emit it); only the assistant tokens carry loss.

The prompt and the target are tokenised so that the prompt's ids are exactly what the student sees
when it generates: the prompt alone, then the target as the rest of the joint text (or alone, when the
tokenizer merges across the boundary).

An empty (or blank) target is EOS alone. An empty prompt is refused: with a tokenizer that puts nothing in
front of a text (GPT-2, Qwen), an empty prefix and an empty input leave no position to predict the target's
first token from.

Truncation keeps the target and cuts the input: a prompt longer than ``max_prompt_length`` loses the end of
its input text (BOS, prefix and template stay); a target longer than ``max_target_length`` is cut and
still ends with EOS. Both are flagged per example for the features report.

Examples:
    >>> from hf_cotmi.tiny import build_word_tokenizer
    >>> tok = build_word_tokenizer(["tom has 3 apples . 3"])
    >>> enc = encode_causal_task(tok, ["predict: tom has 3 apples"], ["3"], max_prompt_length=64,
    ...                          max_target_length=8)
    >>> tok.decode(enc.input_ids[0])
    '<s> predict : tom has 3 apples 3 </s>'
    >>> [tok.decode([t]) for t, l in zip(enc.input_ids[0], enc.labels[0]) if l != -100]
    ['3', '</s>']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CausalEncoding",
    "encode_causal_task",
    "leading_special_ids",
    "ids_in_front",
    "check_prompt_rows",
    "chat_prompt_frame",
    "TARGET_SEPARATOR",
]

TARGET_SEPARATOR = " "
"""Text between the prompt and the target in the plain (no chat template) layout."""


@dataclass
class CausalEncoding:
    """Token ids of one task for a batch of examples, with per-example truncation flags.

    Examples:
        >>> CausalEncoding().input_ids
        []
    """

    input_ids: list[list[int]] = field(default_factory=list)
    attention_mask: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    truncated_prompts: list[bool] = field(default_factory=list)
    truncated_targets: list[bool] = field(default_factory=list)


def _ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _eos_id(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError(
            f"the tokenizer ({type(tokenizer).__name__}) has no EOS token; a decoder-only student needs one "
            "to end each target (set tokenizer.eos_token)"
        )
    return int(eos)


def _split_target(tokenizer: Any, prompts: list[str], prompt_ids: list[list[int]], targets: list[str]) -> Any:
    """Target ids as the rest of the joint text where the prompt's ids are a prefix of the joint ids."""
    joint = _ids(tokenizer, [p + t for p, t in zip(prompts, targets)])
    alone = _ids(tokenizer, targets)
    out = []
    for whole, prompt, fallback in zip(joint, prompt_ids, alone):
        out.append(whole[len(prompt) :] if whole[: len(prompt)] == prompt else fallback)
    return out


def leading_special_ids(tokenizer: Any) -> list[int]:
    """The ids a sequence starts with: what the tokenizer itself puts before a text, else its BOS token.

    Llama's tokenizer (and a BERT tokenizer set up as a decoder) adds BOS in front: that is kept, since it
    is what the pre-trained model saw. A tokenizer that adds nothing in front gets its BOS token, unless it
    has none (Qwen) or BOS is also its EOS (GPT-2, which starts texts without it).

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> tok = build_word_tokenizer(["a"])
        >>> leading_special_ids(tok) == [tok.bos_token_id]
        True
    """
    added = ids_in_front(tokenizer("a", verbose=False)["input_ids"], _ids(tokenizer, ["a"])[0])
    if added:
        return added
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    return [int(bos)] if bos is not None and bos != eos else []


def ids_in_front(sequence: Sequence[int], part: Sequence[int]) -> list[int] | None:
    """The ids of ``sequence`` before the first place ``part`` (non-empty) appears in it; None where it does
    not. With ``sequence`` a text tokenised with special tokens and ``part`` the same text without them, this
    is what the tokenizer puts in front of every text.

    Examples:
        >>> ids_in_front([1, 7, 8, 2], [7, 8]), ids_in_front([7, 8, 2], [7, 8]), ids_in_front([7, 2], [8])
        ([1], [], None)
    """
    for offset in range(len(sequence) - len(part) + 1):
        if part and list(sequence[offset : offset + len(part)]) == list(part):
            return [int(t) for t in sequence[:offset]]
    return None


def check_prompt_rows(rows: Sequence[Sequence[int]], eos_token_id: int | None) -> None:
    """Refuse label-less decoder-only rows that end with EOS: training features whose ``labels`` were dropped.

    Without ``labels`` a row is taken as all prompt. Rows from :func:`encode_causal_task` (and
    ``prepare_dss_features`` for a causal student) end with ``target + EOS``: without their labels the
    student would be prompted with the answer.

    Raises:
        ValueError: naming the first such row.

    Examples:
        >>> check_prompt_rows([[3, 7, 8]], eos_token_id=1)  # a prompt: fine
        >>> check_prompt_rows([[3, 7, 8, 9, 1]], eos_token_id=1)
        Traceback (most recent call last):
        ...
        ValueError: row 0 has no 'labels' and ends with the end-of-sequence token: ...
    """
    if eos_token_id is None:
        return
    for index, ids in enumerate(rows):
        if len(ids) and int(ids[-1]) == int(eos_token_id):
            raise ValueError(
                f"row {index} has no 'labels' and ends with the end-of-sequence token: it looks like training "
                "features (prompt, target, EOS) whose 'labels' column was removed, and the student would be "
                "prompted with the answer; keep 'labels' (-100 marks the prompt), or pass prompts only"
            )


def _chat_prompt(tokenizer: Any, content: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


def _chat_texts(tokenizer: Any, content: str, target: str) -> tuple[str, str]:
    """The rendered prompt (user turn + assistant header) and the assistant turn that follows it."""
    prompt = _chat_prompt(tokenizer, content)
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}, {"role": "assistant", "content": target}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ValueError(
            "the tokenizer's chat template does not render the conversation as the generation prompt plus "
            "the assistant turn (the user turn rendered with add_generation_prompt=True is not a prefix of "
            "the full conversation); use chat_template=False or a template that does"
        )
    return prompt, full[len(prompt) :]


def _probe_contents(tokenizer: Any) -> Any:
    """One-token user contents to render the chat template with: a few common ones, then the vocabulary's."""
    yield from ("a", "b", "x", "0", "1")
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id in range(min(len(tokenizer), 1000)):
        if token_id not in special:
            yield tokenizer.decode([token_id])


def _require_chat_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"chat_template=True but the tokenizer ({type(tokenizer).__name__}) has no chat template; "
            "set tokenizer.chat_template or use chat_template=False"
        )


def chat_prompt_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the chat template puts before and after the user's content in a generation prompt.

    The template renders the user turn plus the assistant header (``add_generation_prompt=True``), as
    :func:`encode_causal_task` does with ``chat_template=True``. Rendered around two contents whose ids
    differ, the ids both renderings start with are the head and those both end with the tail (the end of
    the user turn and the assistant header), which a prompt cut for room must keep.

    Raises:
        ValueError: the tokenizer has no chat template, or gives every probed content the same ids.

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> tok = build_word_tokenizer(["user assistant end a b"])
        >>> tok.chat_template = "user : {{ messages[0]['content'] }} end assistant :"
        >>> head, tail = chat_prompt_frame(tok)
        >>> tok.decode(head), tok.decode(tail)
        ('user :', 'end assistant :')
    """
    _require_chat_template(tokenizer)
    first: list[int] | None = None
    for content in _probe_contents(tokenizer):
        ids = _ids(tokenizer, [_chat_prompt(tokenizer, content)])[0]
        if first is None:
            first = ids
        elif ids != first:
            return _common_ends(first, ids)
    raise ValueError(
        f"cannot tell the chat template's own tokens from the user's content: the tokenizer "
        f"({type(tokenizer).__name__}) gives the rendered prompt the same ids whatever the content"
    )


def _common_ends(first: list[int], second: list[int]) -> tuple[list[int], list[int]]:
    """The longest common start of two id lists and, in what is left of both, their longest common end."""
    shortest = min(len(first), len(second))
    head = 0
    while head < shortest and first[head] == second[head]:
        head += 1
    tail = 0
    while tail < shortest - head and first[-1 - tail] == second[-1 - tail]:
        tail += 1
    return first[:head], first[len(first) - tail :]


def _truncate_chat_prompt(tokenizer: Any, content: str, max_prompt_length: int) -> tuple[list[int], bool]:
    """Prompt ids of the rendered user turn, cutting the end of ``content`` until they fit."""
    ids = _ids(tokenizer, [_chat_prompt(tokenizer, content)])[0]
    if len(ids) <= max_prompt_length:
        return ids, False
    content_ids = _ids(tokenizer, [content])[0]
    for _ in range(8):  # decoding and re-encoding can shift a token or two: shrink until it fits
        overflow = len(ids) - max_prompt_length
        if overflow <= 0:
            return ids, True
        keep = len(content_ids) - overflow
        if keep < 0:
            break
        content_ids = content_ids[:keep]
        text = tokenizer.decode(content_ids, skip_special_tokens=False)
        ids = _ids(tokenizer, [_chat_prompt(tokenizer, text)])[0]
    raise ValueError(
        f"the chat template alone is longer than max_input_length={max_prompt_length} tokens; raise the limit"
    )


def _prompt_room(max_prompt_length: int, max_length: int | None, target_length: int) -> int:
    """The tokens a prompt may take: ``max_prompt_length``, and within a context of ``max_length`` what a
    target of ``target_length`` tokens leaves."""
    return max_prompt_length if max_length is None else min(max_prompt_length, max_length - target_length)


def encode_causal_task(
    tokenizer: Any,
    prompts: list[str],
    targets: list[str],
    *,
    max_prompt_length: int,
    max_target_length: int,
    chat_template: bool = False,
    max_length: int | None = None,
    row_names: Sequence[str] | None = None,
    allow_empty_prompts: bool = False,
) -> CausalEncoding:
    """Tokenise ``prompt -> target`` pairs into one sequence each with the loss on target and EOS only.

    Args:
        tokenizer: the student's tokenizer; it needs an EOS token (and a chat template with
            ``chat_template=True``).
        prompts: the prefixed inputs (``"predict: ..."``).
        targets: the labels or rationales.
        max_prompt_length: token limit of the prompt (BOS and template tokens included).
        max_target_length: token limit of the target (EOS included).
        chat_template: render prompt and target with the tokenizer's chat template.
        max_length: the student's context (:func:`hf_cotmi.students.context_length`): a prompt is cut further
            (its end goes, as with ``max_prompt_length``, and it counts as truncated) where prompt and target
            together would not fit; None for no such limit.
        row_names: what error messages call each pair (``"split 'train', row 3, label task"``); ``"row i"``
            by default.
        allow_empty_prompts: keep a prompt of no tokens instead of refusing it (for splitting targets only:
            no position predicts such a target's first token).

    Returns:
        A :class:`CausalEncoding`: ``input_ids``, ``attention_mask``, ``labels`` (``-100`` on the prompt)
        and the truncation flags.

    Raises:
        ValueError: no EOS token, no chat template when one is asked for, a template that does not render
            the prompt as a prefix of the conversation, a template longer than ``max_prompt_length``, or a
            prompt of no tokens (an empty prompt text where the tokenizer puts no BOS in front), naming it.

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> tok = build_word_tokenizer(["a b c d e f"])
        >>> enc = encode_causal_task(tok, ["a b c d e"], ["f"], max_prompt_length=3, max_target_length=4)
        >>> tok.decode(enc.input_ids[0]), enc.truncated_prompts
        ('<s> a b f </s>', [True])
    """
    if len(prompts) != len(targets):
        raise ValueError(f"got {len(prompts)} prompts but {len(targets)} targets")
    if max_prompt_length < 1 or max_target_length < 1:
        raise ValueError("max_prompt_length and max_target_length must be positive")
    if max_length is not None and max_target_length >= max_length:
        raise ValueError(
            f"max_target_length={max_target_length} leaves no room for a prompt in the student's context of "
            f"{max_length} tokens (prompt and target share it); lower the target's limit below {max_length}"
        )
    eos = _eos_id(tokenizer)
    out = CausalEncoding()
    if chat_template:
        _require_chat_template(tokenizer)
        prompt_ids, target_ids = [], []
        for prompt, target in zip(prompts, targets):
            rendered, turn = _chat_texts(tokenizer, prompt, target)
            # the turn as the whole conversation tokenises it (a SentencePiece tokenizer gives "yes" there,
            # "▁yes" alone), split at the untruncated prompt's ids as in the plain layout
            turn_ids = _split_target(tokenizer, [rendered], _ids(tokenizer, [rendered]), [turn])[0]
            if eos in turn_ids:  # the turn ends at EOS: what follows it (a newline) carries no loss
                turn_ids = turn_ids[: turn_ids.index(eos)]
            # cut with the template kept whole: where the context is short, the room the target leaves
            room = _prompt_room(max_prompt_length, max_length, min(len(turn_ids) + 1, max_target_length))
            ids, cut = _truncate_chat_prompt(tokenizer, prompt, room)
            prompt_ids.append(ids)
            target_ids.append(turn_ids)
            out.truncated_prompts.append(cut)
    else:
        lead = leading_special_ids(tokenizer)
        raw = _ids(tokenizer, prompts)
        prompt_ids = []
        for ids in raw:
            ids = lead + ids
            out.truncated_prompts.append(len(ids) > max_prompt_length)
            prompt_ids.append(ids[:max_prompt_length])
        # The joint split uses the untruncated prompt text, so the target ids do not depend on the cut.
        target_ids = _split_target(tokenizer, prompts, raw, [TARGET_SEPARATOR + t for t in targets])
        # an empty (or blank) target is EOS alone: the separator before it would be a token of its own
        target_ids = [ids if text.strip() else [] for ids, text in zip(target_ids, targets)]
    if not allow_empty_prompts:
        _check_prompts_have_tokens(prompt_ids, prompts, row_names)
    for row, (prompt, target) in enumerate(zip(prompt_ids, target_ids)):
        out.truncated_targets.append(len(target) + 1 > max_target_length)
        target = target[: max_target_length - 1] + [eos]
        room = _prompt_room(max_prompt_length, max_length, len(target))
        if len(prompt) > room:  # prompt and target would not fit the context together
            prompt = prompt[:room]
            out.truncated_prompts[row] = True
        out.input_ids.append(prompt + target)
        out.attention_mask.append([1] * (len(prompt) + len(target)))
        out.labels.append([-100] * len(prompt) + target)
    return out


def _check_prompts_have_tokens(
    prompt_ids: Sequence[Sequence[int]], prompts: Sequence[str], row_names: Sequence[str] | None
) -> None:
    """Refuse the first prompt of no tokens: the target's first token would follow nothing."""
    for row, (ids, text) in enumerate(zip(prompt_ids, prompts)):
        if len(ids):
            continue
        name = row_names[row] if row_names is not None else f"row {row}"
        raise ValueError(
            f"{name}: the prompt {text!r} has no tokens (the tokenizer puts no BOS token in front of a text), "
            "so a decoder-only student would have no position to predict the target's first token from; give "
            "the task a prefix (predict_prefix / explain_prefix) or the example a non-empty input"
        )
