"""Label confidence of a decoder-only student: its prompts, candidate scores and generations.

:func:`hf_cotmi.label_confidences` calls these for a causal student (``config.is_encoder_decoder`` false).
The prompt of an example is exactly what training puts in front of the target
(:func:`hf_cotmi.data.causal.encode_causal_task`): the prompt columns of tokenised features (the
positions whose label is ``-100``), or ``[BOS] <prefix><input>`` tokenised as training does.

- Candidates: ``log p(candidate + EOS | prompt)``, with the candidate's tokens split off the prompt as
  training splits a target. The prompts of a batch run once, left-padded, with ``use_cache=True``; the
  cache is expanded to one row per candidate and only the candidate tokens run on top of it
  (:func:`score_candidates`). A model that returns no cache is scored with one full pass per candidate row.
- Generation (sequence and first-token confidence): greedy or beam generation from the left-padded
  prompts; the prompt is cut off the returned sequences. A model with prompt-learning PEFT adapters
  generates without a key-value cache and, for adapters whose virtual tokens go in front of the input, from
  prompts of one length per call (:func:`exact_generation`, :func:`generation_groups`).

Examples:
    >>> from hf_cotmi.tiny import build_word_tokenizer
    >>> tok = build_word_tokenizer(["predict: a cat sleeps", "yes no"])
    >>> prompts = causal_prompts(tok, ["predict: a cat sleeps"])
    >>> tok.decode(prompts[0])
    '<s> predict : a cat sleeps'
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "CANDIDATE_SCORING",
    "causal_prompts",
    "prompts_of_features",
    "fit_prompts_to_room",
    "fit_prompts_to_candidates",
    "candidate_target_ids",
    "score_candidates",
    "left_pad",
    "generate_from_prompts",
    "generation_groups",
    "generate_in_groups",
    "exact_generation",
]

CANDIDATE_SCORING: tuple[str, ...] = ("cache", "full")
"""``"cache"``: the prompt runs once and its key-value cache is shared by the candidates; ``"full"``: one
forward pass over prompt + candidate per candidate row (what a model without a cache needs)."""

_UNBOUNDED = 1_000_000  # a length limit no text reaches


def causal_prompts(
    tokenizer: Any,
    prompts: Sequence[str],
    max_prompt_length: int | None = None,
    *,
    chat_template: bool = False,
    first_index: int = 0,
) -> list[list[int]]:
    """Prompt ids of prefixed inputs, exactly as :func:`~hf_cotmi.data.causal.encode_causal_task` builds them.

    Args:
        tokenizer: the student's tokenizer.
        prompts: prefixed inputs (``"predict: ..."``).
        max_prompt_length: cut longer prompts (the end of the input goes), as training does.
        chat_template: render each prompt as a user turn plus the assistant header (the tokenizer's chat
            template), as features built with ``chat_template=True`` are.
        first_index: the example index of the first prompt, for error messages.

    Raises:
        ValueError: a prompt of no tokens (an empty prompt text where the tokenizer puts no BOS in front),
            naming its example.

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> tok = build_word_tokenizer(["a b c"])
        >>> tok.decode(causal_prompts(tok, ["a b c"], max_prompt_length=2)[0])
        '<s> a'
    """
    from .data.causal import encode_causal_task

    encoded = encode_causal_task(
        tokenizer,
        list(prompts),
        [""] * len(prompts),
        max_prompt_length=max_prompt_length or _UNBOUNDED,
        max_target_length=_UNBOUNDED,
        chat_template=chat_template,
        row_names=[f"example {first_index + i}" for i in range(len(prompts))],
    )
    return [_prompt_part(ids, labels) for ids, labels in zip(encoded.input_ids, encoded.labels)]


def _prompt_part(input_ids: Sequence[int], labels: Sequence[int]) -> list[int]:
    width = next((i for i, label in enumerate(labels) if label != -100), len(labels))
    return [int(t) for t in input_ids[:width]]


def prompts_of_features(
    input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]] | None, *, first_index: int = 0
) -> list[list[int]]:
    """The prompt of each tokenised causal example: its leading ids whose label is ``-100``.

    Without labels the whole of ``input_ids`` is the prompt. ``first_index`` is the dataset index of the
    first example (for error messages).

    Raises:
        ValueError: an example whose labels are not as long as its ids, or whose prompt has no ids (its
            first id is already a target: features built without a BOS token and an empty prompt text, or by
            hand), naming its index.

    Examples:
        >>> prompts_of_features([[3, 7, 8, 9, 1]], [[-100, -100, -100, 9, 1]])
        [[3, 7, 8]]
        >>> prompts_of_features([[9, 1]], [[9, 1]], first_index=4)
        Traceback (most recent call last):
        ...
        ValueError: example 4: its prompt has no ids (its first id is already a target); a decoder-only student ...
    """
    out = []
    rows = [None] * len(input_ids) if labels is None else labels
    for index, (ids, row) in enumerate(zip(input_ids, rows), start=first_index):
        if row is not None and len(ids) != len(row):
            raise ValueError(
                f"example {index}: `input_ids` has {len(ids)} ids but `labels` {len(row)}; a decoder-only "
                "student's features have labels as long as the ids (-100 on the prompt)"
            )
        prompt = [int(t) for t in ids] if row is None else _prompt_part(ids, row)
        if not prompt:
            where = "its first id is already a target" if row is not None else "its `input_ids` are empty"
            raise ValueError(
                f"example {index}: its prompt has no ids ({where}); a decoder-only student needs at least one "
                "prompt token before its target (prepare_dss_features refuses such rows: rebuild the features "
                "with it)"
            )
        out.append(prompt)
    return out


def fit_prompts_to_room(
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    room: int,
    *,
    chat_template: bool | None = False,
    first_index: int = 0,
) -> list[list[int]]:
    """Prompt ids cut to ``room`` tokens (the room generation leaves in the student's context), as training cuts.

    A prompt that fits is kept as it is. A plain prompt loses its end (the end of the input). A chat prompt
    (the user turn plus the assistant header, :func:`hf_cotmi.data.causal.chat_prompt_frame`) loses the end
    of the user's content and keeps the template's tail, so the student still generates as the assistant.

    Args:
        tokenizer: the student's tokenizer (its chat template gives the tail).
        prompts: prompt ids, without padding.
        room: the most tokens a prompt may take.
        chat_template: True: the prompts are chat prompts (each must end with the template's tail); False:
            plain prompts; None: a prompt that ends with the tail of the tokenizer's chat template is a chat
            prompt, any other a plain one (for callers that do not know how the features were built).
        first_index: the index of the first prompt, for error messages.

    Raises:
        ValueError: with ``chat_template=True``, a prompt to cut that does not end with the template's tail,
            or a ``room`` smaller than the template alone.

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> tok = build_word_tokenizer(["user assistant end a b c d"])
        >>> tok.chat_template = "user : {{ messages[0]['content'] }} end assistant :"
        >>> ids = tok("user : a b c d end assistant :", add_special_tokens=False)["input_ids"]
        >>> tok.decode(fit_prompts_to_room(tok, [ids], 6, chat_template=True)[0])
        'user : a end assistant :'
        >>> tok.decode(fit_prompts_to_room(tok, [ids], 6)[0])
        'user : a b c d'
    """
    rows = [[int(t) for t in ids] for ids in prompts]
    if all(len(row) <= room for row in rows):
        return rows
    from .data.causal import chat_prompt_frame

    frame = None
    if chat_template:
        frame = chat_prompt_frame(tokenizer)
    elif chat_template is None and getattr(tokenizer, "chat_template", None):
        try:
            frame = chat_prompt_frame(tokenizer)
        except Exception:  # a template that cannot render one user turn: no prompt of this tokenizer is chat
            frame = None
    out = []
    for index, row in enumerate(rows, start=first_index):
        if len(row) <= room:
            out.append(row)
        elif frame is not None and frame[1] and row[-len(frame[1]) :] == frame[1]:
            out.append(_cut_chat_prompt(row, room, frame, index))
        elif chat_template:
            raise ValueError(
                f"prompt {index} does not end with the chat template's assistant header "
                f"({tokenizer.decode(frame[1])!r}), so it cannot be cut to {room} tokens keeping it; "
                "build the features with chat_template=True and this tokenizer, or use chat_template=False"
            )
        else:
            out.append(row[:room])
    return out


def fit_prompts_to_candidates(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    candidate_ids: Sequence[Sequence[Sequence[int]]],
    *,
    chat_template: bool | None = False,
    first_index: int = 0,
) -> list[list[int]]:
    """Each prompt cut (:func:`fit_prompts_to_room`) to leave its longest candidate room in the student's context.

    Training cuts a prompt so that prompt and target fit the context
    (:func:`hf_cotmi.students.context_length`); the candidates of one example share its prompt, so the room
    is the context less the longest of them. Unchanged where the context is unknown.

    Args:
        model: the decoder-only student (its config gives the context).
        tokenizer: its tokenizer (``model_max_length``, and the chat template's tail).
        prompts: one prompt per example, without padding.
        candidate_ids: per example, the target ids of each candidate (EOS included).
        chat_template: as :func:`fit_prompts_to_room` takes it.
        first_index: the example index of the first prompt, for error messages.

    Raises:
        ValueError: an example whose longest candidate leaves no room for a prompt, naming it.

    Examples:
        >>> from types import SimpleNamespace
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> tok = build_word_tokenizer(["a b c d yes no"])
        >>> model = SimpleNamespace(config=SimpleNamespace(n_positions=5))
        >>> ids = tok("a b c d", add_special_tokens=False)["input_ids"]
        >>> tok.decode(fit_prompts_to_candidates(model, tok, [ids], [[[8, 1], [9, 1]]])[0])
        'a b c'
    """
    from .students import context_length

    context = context_length(model, tokenizer)
    rows = [[int(t) for t in ids] for ids in prompts]
    if context is None:
        return rows
    out = []
    for index, (row, candidates) in enumerate(zip(rows, candidate_ids), start=first_index):
        longest = max((len(ids) for ids in candidates), default=0)
        if longest >= context:
            raise ValueError(
                f"example {index}: the longest candidate takes {longest} tokens (EOS included) but the "
                f"student's context is {context} tokens, which leaves no room for the prompt; give shorter "
                "candidates"
            )
        out += fit_prompts_to_room(
            tokenizer, [row], context - longest, chat_template=chat_template, first_index=index
        )
    return out


def _cut_chat_prompt(row: list[int], room: int, frame: tuple[list[int], list[int]], index: int) -> list[int]:
    head, tail = frame
    if room < len(head) + len(tail):
        raise ValueError(
            f"prompt {index}: the chat template alone takes {len(head) + len(tail)} tokens (before and after the "
            f"user's content) but the prompt may take {room} (the student's context less the tokens to "
            "generate); generate fewer new tokens"
        )
    return row[: room - len(tail)] + tail


def candidate_target_ids(
    tokenizer: Any, prompt_text: str, candidates: Sequence[str], *, chat_template: bool = False
) -> list[list[int]]:
    """Each candidate's target ids after ``prompt_text``, EOS included, as training tokenises a target.

    With ``chat_template=True`` ``prompt_text`` is the user turn's content and each candidate is the
    assistant turn that follows it (the template's end-of-turn tokens included), as features built with
    ``chat_template=True`` carry their targets.

    Examples:
        >>> from hf_cotmi.tiny import build_word_tokenizer
        >>> tok = build_word_tokenizer(["predict: a", "yes no"])
        >>> [tok.decode(ids) for ids in candidate_target_ids(tok, "predict: a", ["yes", "no"])]
        ['yes </s>', 'no </s>']
    """
    from .data.causal import encode_causal_task

    encoded = encode_causal_task(
        tokenizer,
        [prompt_text] * len(candidates),
        list(candidates),
        max_prompt_length=_UNBOUNDED,
        max_target_length=_UNBOUNDED,
        chat_template=chat_template,
        allow_empty_prompts=True,  # the targets only; scoring refuses a prompt of no tokens
    )
    return [[int(t) for t in row if t != -100] for row in encoded.labels]


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, torch: Any, device: Any
) -> tuple[Any, Any, Any]:
    """``(input_ids, attention_mask, position_ids)`` of left-padded rows; positions count real tokens only.

    Examples:
        >>> import torch
        >>> ids, mask, positions = left_pad([[5, 6], [7]], 0, torch, "cpu")
        >>> ids.tolist(), mask.tolist(), positions.tolist()
        ([[5, 6], [0, 7]], [[1, 1], [0, 1]], [[0, 1], [0, 0]])
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), int(pad_id), dtype=torch.long, device=device)
    mask = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
    for i, row in enumerate(sequences):
        if len(row):
            ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long, device=device)
            mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def _takes(model: Any, name: str) -> bool:
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return name in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - an unusual forward
        return False


def _cache_argument(model: Any) -> str | None:
    """The name under which ``forward`` takes a key-value cache (``cache`` in transformers 5.2x, formerly
    ``past_key_values``), or None; None too for a model with prompt-learning PEFT adapters: prompt tuning
    and p-tuning put virtual tokens in front of every call's input, which would land between the cached
    prompt and the candidate tokens, and prefix tuning's own cache entries scored the candidates wrongly
    with the lowest supported versions (peft 0.21, transformers 5.19: 0.045 log-probability off), so all
    of them are scored with full passes."""
    from .peft_methods import prompt_learning_method

    if prompt_learning_method(model):
        return None
    for name in ("cache", "past_key_values"):
        if _takes(model, name):
            return name
    return None


def _forward(model: Any, ids: Any, mask: Any, positions: Any, **extra: Any) -> Any:
    inputs = {"input_ids": ids, "attention_mask": mask, "return_dict": True, **extra}
    if _takes(model, "position_ids"):
        inputs["position_ids"] = positions
    return model(**inputs)


def score_candidates(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    candidate_ids: Sequence[Sequence[Sequence[int]]],
    *,
    pad_id: int,
    batch_size: int,
    strategy: str = "cache",
) -> list[np.ndarray]:
    """``log p(candidate | prompt)`` (summed over its tokens, EOS included) of every candidate of every prompt.

    Runs without gradients (it is an evaluation, whether or not the caller is inside ``torch.no_grad()``).

    Args:
        model: a decoder-only student.
        prompt_ids: one prompt per example (non-empty).
        candidate_ids: per example, the target ids of each of its candidates (from
            :func:`candidate_target_ids`).
        pad_id: id used for padding (never attended to).
        batch_size: candidate rows per forward pass (and prompts per prompt pass).
        strategy: ``"cache"`` (the prompt runs once, its cache is shared) or ``"full"`` (prompt + candidate
            per row); ``"cache"`` falls back to ``"full"`` for a model that returns no cache, and for
            prompt tuning and p-tuning adapters (their virtual tokens cannot continue a cache).

    Returns:
        One float64 array of scores per example, in the order of its candidates.

    Examples:
        >>> # score_candidates(model, [[3, 8, 9]], [[[12, 1], [13, 1]]], pad_id=0, batch_size=8)
        >>> # [array([-0.21, -1.66])]
    """
    import torch

    if strategy not in CANDIDATE_SCORING:
        raise ValueError(f"`strategy` must be one of {CANDIDATE_SCORING}; got {strategy!r}")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token to condition the candidates on")
    cache_argument = _cache_argument(model)
    with torch.no_grad():  # scores, not a loss: no graph (a shared cache with one cannot be copied either)
        if strategy == "cache" and cache_argument is not None:
            totals = _score_with_cache(
                model, prompt_ids, candidate_ids, pad_id, batch_size, cache_argument, torch
            )
        else:
            totals = None
        if totals is None:
            totals = _score_full(model, prompt_ids, candidate_ids, pad_id, batch_size, torch)
    scores, k = [], 0
    for cands in candidate_ids:
        scores.append(np.asarray(totals[k : k + len(cands)], dtype=np.float64))
        k += len(cands)
    return scores


def _rows(candidate_ids: Sequence[Sequence[Sequence[int]]]) -> list[tuple[int, list[int]]]:
    rows = [(i, [int(t) for t in ids]) for i, cands in enumerate(candidate_ids) for ids in cands]
    if any(not ids for _, ids in rows):
        raise ValueError("a candidate has no target ids (it should at least end with EOS)")
    return rows


def _right_padded(rows: Sequence[Sequence[int]], pad_id: int, torch: Any, device: Any) -> tuple[Any, Any]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for j, row in enumerate(rows):
        ids[j, : len(row)] = torch.tensor(row, dtype=torch.long, device=device)
        mask[j, : len(row)] = 1
    return ids, mask


def _score_with_cache(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    candidate_ids: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
    batch_size: int,
    cache_argument: str,
    torch: Any,
) -> list[float] | None:
    """Scores from one prompt pass per batch of prompts and the candidate tokens on its cache."""
    device = next(model.parameters()).device
    rows = _rows(candidate_ids)
    totals: list[float] = []
    for first in range(0, len(prompt_ids), batch_size):
        prompts = prompt_ids[first : first + batch_size]
        ids, mask, positions = left_pad(prompts, pad_id, torch, device)
        keep_last = {"logits_to_keep": 1} if _takes(model, "logits_to_keep") else {}
        out = _forward(model, ids, mask, positions, use_cache=True, **keep_last)
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        if cache is None or not hasattr(cache, "batch_select_indices"):
            return None
        first_log_probs = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # predicts each target's 1st
        lengths = mask.sum(-1)
        mine = [(i - first, ids_) for i, ids_ in rows if first <= i < first + len(prompts)]
        for start in range(0, len(mine), batch_size):
            chunk = mine[start : start + batch_size]
            index = torch.tensor([i for i, _ in chunk], dtype=torch.long, device=device)
            targets, target_mask = _right_padded([t for _, t in chunk], pad_id, torch, device)
            head = first_log_probs.index_select(0, index).gather(-1, targets[:, :1]).squeeze(-1)
            if targets.shape[1] == 1:  # every candidate of the chunk is a single token: no step to run
                totals.extend(head.tolist())
                continue
            # the candidate rows share the prompt's cache: a copy per chunk, except for the last chunk
            chunk_cache = cache if start + batch_size >= len(mine) else copy.deepcopy(cache)
            chunk_cache.batch_select_indices(index)
            step_positions = lengths.index_select(0, index).unsqueeze(-1) + torch.arange(
                targets.shape[1], device=device
            )
            full_mask = torch.cat([mask.index_select(0, index), target_mask], dim=1)
            # the last target token (EOS) predicts nothing that is scored: feed all but it
            step = _forward(
                model,
                targets[:, :-1],
                full_mask[:, :-1],
                step_positions[:, :-1],
                **{cache_argument: chunk_cache},
                use_cache=True,
            )
            log_probs = torch.log_softmax(step.logits.float(), dim=-1)
            rest = log_probs.gather(-1, targets[:, 1:].unsqueeze(-1)).squeeze(-1)
            rest = torch.where(target_mask[:, 1:].bool(), rest, torch.zeros_like(rest))
            totals.extend((head + rest.sum(-1)).tolist())
    return totals


def _score_full(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    candidate_ids: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
    batch_size: int,
    torch: Any,
) -> list[float]:
    """Scores from one forward pass over prompt + candidate per candidate row (left-padded prompts).

    A model with prompt-learning adapters gets no left padding: peft puts its virtual tokens in front of the
    padding and (prompt tuning, p-tuning) drops ``position_ids``, so a padded prompt would be scored at
    shifted positions. Its passes hold prompts of one length each.
    """
    from .peft_methods import prompt_learning_method

    device = next(model.parameters()).device
    one_length = prompt_learning_method(model) is not None
    totals: list[float] = []
    for chunk in _full_pass_chunks(_rows(candidate_ids), prompt_ids, batch_size, one_length):
        prompt_part, prompt_mask, _ = left_pad([prompt_ids[i] for i, _ in chunk], pad_id, torch, device)
        targets, target_mask = _right_padded([t for _, t in chunk], pad_id, torch, device)
        ids = torch.cat([prompt_part, targets], dim=1)
        mask = torch.cat([prompt_mask, target_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # position t predicts token t + 1: the last prompt position up to the last target's predecessor,
        # and no output projection for the rest. Counted from the end: prompt tuning puts virtual tokens in
        # front of the logits.
        predicting_positions = torch.arange(-targets.shape[1] - 1, -1, device=device)
        if _takes(model, "logits_to_keep"):
            logits = _forward(
                model, ids, mask, positions, use_cache=False, logits_to_keep=predicting_positions
            ).logits
        else:
            logits = _forward(model, ids, mask, positions, use_cache=False).logits[:, predicting_positions]
        predicting = logits.float()
        log_probs = torch.log_softmax(predicting, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        totals.extend(
            torch.where(target_mask.bool(), log_probs, torch.zeros_like(log_probs)).sum(-1).tolist()
        )
    return totals


def _full_pass_chunks(
    rows: list[tuple[int, list[int]]],
    prompt_ids: Sequence[Sequence[int]],
    batch_size: int,
    one_prompt_length: bool,
) -> list[list[tuple[int, list[int]]]]:
    """Consecutive candidate rows in passes of at most ``batch_size``; with ``one_prompt_length`` a pass
    also ends where the prompt length changes, so none of its prompts is padded.

    Examples:
        >>> rows = [(0, [5, 1]), (0, [6, 1]), (1, [7, 1])]
        >>> [len(c) for c in _full_pass_chunks(rows, [[3, 4], [3]], 4, True)]
        [2, 1]
        >>> [len(c) for c in _full_pass_chunks(rows, [[3, 4], [3]], 4, False)]
        [3]
    """
    chunks: list[list[tuple[int, list[int]]]] = []
    for row in rows:
        current = chunks[-1] if chunks else None
        if (
            current is None
            or len(current) == batch_size
            or (one_prompt_length and len(prompt_ids[row[0]]) != len(prompt_ids[current[0][0]]))
        ):
            chunks.append([row])
        else:
            current.append(row)
    return chunks


def generate_in_groups(
    model: Any, prompt_ids: Sequence[Sequence[int]], *, pad_id: int, **generation: Any
) -> Iterator[tuple[list[int], Any, int]]:
    """:func:`generate_from_prompts` over each :func:`generation_groups` group of ``prompt_ids`` (one group
    but for prompt-learning adapters): yields ``(rows, output, width)``, ``rows`` the indices of the group's
    prompts in ``prompt_ids`` (the output's rows, in order).

    Examples:
        >>> # texts = [""] * len(prompts)
        >>> # for rows, out, width in generate_in_groups(model, prompts, pad_id=0, max_new_tokens=8):
        >>> #     for row, ids in zip(rows, out[:, width:]):
        >>> #         texts[row] = tokenizer.decode(ids, skip_special_tokens=True)
    """
    for rows in generation_groups(model, [len(prompt) for prompt in prompt_ids]):
        output, width = generate_from_prompts(
            model, [prompt_ids[row] for row in rows], pad_id=pad_id, **generation
        )
        yield rows, output, width


def generate_from_prompts(
    model: Any, prompt_ids: Sequence[Sequence[int]], *, pad_id: int, **generation: Any
) -> tuple[Any, int]:
    """``model.generate`` from left-padded prompts; returns the output and the prompt width to cut off.

    Generates under :func:`exact_generation` (no change for a model without prompt-learning adapters). The
    prompts of one call should come from one :func:`generation_groups` group (:func:`generate_in_groups`
    makes the groups).

    Examples:
        >>> # out, width = generate_from_prompts(model, prompts, pad_id=0, max_new_tokens=8,
        >>> #                                    output_scores=True, return_dict_in_generate=True)
        >>> # new_tokens = out.sequences[:, width:]
    """
    import torch

    device = next(model.parameters()).device
    ids, mask, _ = left_pad(prompt_ids, pad_id, torch, device)
    with exact_generation(model) as exact:
        out = model.generate(
            input_ids=ids, attention_mask=mask, pad_token_id=int(pad_id), **{**generation, **exact}
        )
    return out, ids.shape[1]


_PREFIX_STYLE = ("PREFIX_TUNING", "CARTRIDGE")
"""Prompt-learning methods whose virtual tokens are key-value entries in front of the input at positions of
their own (peft moves ``position_ids`` past them): left padding leaves a row's positions as they are alone.
The others (prompt tuning, p-tuning, CPT) put virtual-token embeddings in front of the input, padding
included, and peft drops ``position_ids`` for them."""

_CACHE_OUTPUTS = ("cache", "past_key_values")


def generation_groups(model: Any, prompt_lengths: Sequence[int]) -> list[list[int]]:
    """The rows of a batch to generate together: all of them, except for a model whose prompt-learning adapters
    put virtual tokens in front of the input (prompt tuning, p-tuning): rows of one prompt length each.

    peft puts those virtual tokens in front of the left padding and ignores ``position_ids``, so a padded row
    would be generated at positions shifted by its padding. Rows keep their order within a group; the groups
    come in the order of their first row.

    Examples:
        >>> from types import SimpleNamespace
        >>> generation_groups(SimpleNamespace(), [4, 2, 4])
        [[0, 1, 2]]
        >>> from peft import PromptTuningConfig
        >>> tuned = SimpleNamespace(peft_config={"default": PromptTuningConfig(num_virtual_tokens=2)})
        >>> generation_groups(tuned, [4, 2, 4])
        [[0, 2], [1]]
    """
    from .peft_methods import prompt_learning_method

    method = prompt_learning_method(model)
    if method is None or method in _PREFIX_STYLE:
        return [list(range(len(prompt_lengths)))]
    groups: dict[int, list[int]] = {}
    for row, length in enumerate(prompt_lengths):
        groups.setdefault(int(length), []).append(row)
    return list(groups.values())


@contextmanager
def exact_generation(model: Any) -> Iterator[dict[str, Any]]:
    """``generate`` arguments under which a model with prompt-learning adapters generates what peft's own
    forward computes for the prompt and the tokens generated so far; ``{}`` (and nothing changed) for any
    other model.

    With peft 0.21 and transformers 5.2x ``generate`` is wrong for prompt learning: peft's
    ``prepare_inputs_for_generation`` looks for the key-value cache under ``past_key_values``, which
    transformers now passes as ``cache``. With a cache, prompt tuning and p-tuning get their virtual tokens in
    front of every new token again, and prefix tuning's prefix (passed as ``past_key_values``) loses to the
    empty ``cache``: the student generates without it. So these models generate with ``use_cache=False``
    (each step runs the whole sequence through peft's forward), and for the duration a forward hook on the
    base model drops the cache the model returns anyway (Llama returns the prefix cache it was given, grown by
    the step's tokens, and ``generate`` would carry it into the next step). Each new token costs a pass over
    the whole sequence.

    Examples:
        >>> from types import SimpleNamespace
        >>> with exact_generation(SimpleNamespace()) as extra:
        ...     extra
        {}
        >>> # with exact_generation(model) as extra:
        >>> #     out = model.generate(input_ids=ids, attention_mask=mask, **{**generation, **extra})
    """
    from .peft_methods import prompt_learning_method

    if prompt_learning_method(model) is None:
        yield {}
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else None
    handle = base.register_forward_hook(_drop_returned_cache, with_kwargs=True) if base is not None else None
    try:
        yield {"use_cache": False}
    finally:
        if handle is not None:
            handle.remove()


def _drop_returned_cache(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> Any:
    """Forward hook: the output without the key-value cache of a call made with ``use_cache=False``."""
    if kwargs.get("use_cache") is not False or not hasattr(output, "items"):
        return None
    kept = {key: value for key, value in output.items() if key not in _CACHE_OUTPUTS}
    return type(output)(**kept) if len(kept) < len(output) else None
