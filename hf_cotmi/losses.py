"""The mutual-information (MI) auxiliary loss of Chen et al. (Findings of ACL 2024), as pure tensor functions.

Notation (see ``docs/concepts/mi-loss.md``): ``Z`` are the label-pass decoder logits ``[B, m, V]``, ``R`` the
rationale-pass logits ``[B, n, V]``. Each side is turned into one distribution-like vector per example by a
softmax over the vocabulary followed by a reduction over decoder positions (``max`` or ``mean``):
``p[b, v] = reduce_t softmax(Z[b, t])[v]`` (detached) and ``q[b, v] = reduce_t softmax(R[b, t])[v]``. The loss
compares ``p`` with ``q``.

Memory: the reduction over positions is a custom autograd function that keeps only the arg-max indices
(``[B, V]``) and the per-position log-sum-exp (``[B, n]``) besides a reference to its input, and it recomputes
what the backward pass needs in vocabulary or position chunks. It never stores a ``[B, n, V]`` softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# the public loss; the other functions are the building blocks chunked_losses.py and the trainer share
__all__ = ["mutual_information_loss"]

REDUCTIONS = ("max", "mean")
DIVERGENCES = ("ce", "kl")
VARIANTS = ("paper", "masked")

# Elements per temporary chunk (float32): 2**22 elements = 16 MiB.
_CHUNK_ELEMENTS = 1 << 22


def _chunk_size(total: int, elements_per_unit: int) -> int:
    return max(1, min(total, _CHUNK_ELEMENTS // max(1, elements_per_unit)))


def _log_normaliser(logits: torch.Tensor) -> torch.Tensor:
    """Per-position log-sum-exp over the vocabulary, ``[B, n]`` in float32, computed in position chunks."""
    batch, length, vocab = logits.shape
    out = torch.empty(batch, length, dtype=torch.float32, device=logits.device)
    step = _chunk_size(length, batch * vocab)
    for start in range(0, length, step):
        out[:, start : start + step] = torch.logsumexp(logits[:, start : start + step].float(), dim=-1)
    return out


class _ReducedSoftmax(torch.autograd.Function):
    """``q[b, v] = reduce_t softmax(x[b, t])[v]`` over the valid positions, without storing the softmax.

    With ``inputs_are_log_probs=True`` the input is taken to be a log-softmax output already, so the
    normaliser is skipped (``softmax(x) == exp(x)``); the gradient it returns is then the gradient of
    ``reduce_t exp(x[b, t])``, which gives the same gradient with respect to the logits once it flows back
    through the caller's ``log_softmax``.
    """

    @staticmethod
    def forward(ctx, x, position_mask, reduction, inputs_are_log_probs):  # type: ignore[override]
        batch, length, vocab = x.shape
        if inputs_are_log_probs:
            lse = torch.zeros(batch, length, dtype=torch.float32, device=x.device)
        else:
            lse = _log_normaliser(x)
        step = _chunk_size(vocab, batch * length)
        if reduction == "max":
            if inputs_are_log_probs and position_mask is None:
                values, argmax = x.max(dim=1)
                q = values.float().exp()
            else:
                q = torch.empty(batch, vocab, dtype=torch.float32, device=x.device)
                argmax = torch.empty(batch, vocab, dtype=torch.long, device=x.device)
                for start in range(0, vocab, step):
                    chunk = x[:, :, start : start + step].float() - lse[:, :, None]
                    if position_mask is not None:
                        chunk.masked_fill_(~position_mask[:, :, None], float("-inf"))
                    values, idx = chunk.max(dim=1)
                    q[:, start : start + step] = values.exp()
                    argmax[:, start : start + step] = idx
            ctx.save_for_backward(x, lse, argmax, q)
        else:
            q = torch.empty(batch, vocab, dtype=torch.float32, device=x.device)
            weights = position_mean_weights(position_mask, batch, length, x.device)
            # autocast would run the einsum (a batched product) in bf16 or fp16 and round q
            with torch.autocast(x.device.type, enabled=False):
                for start in range(0, vocab, step):
                    probs = (x[:, :, start : start + step].float() - lse[:, :, None]).exp_()
                    q[:, start : start + step] = torch.einsum("btv,bt->bv", probs, weights)
            ctx.save_for_backward(x, lse, weights)
        ctx.reduction = reduction
        ctx.inputs_are_log_probs = inputs_are_log_probs
        return q

    @staticmethod
    def backward(ctx, grad_q):  # type: ignore[override]
        grad_q = grad_q.float()
        if ctx.reduction == "max":
            x, lse, argmax, q = ctx.saved_tensors
            weighted = grad_q * q  # d q[b, v] / d x[b, t*, v] = q[b, v]
            per_position = None
            if not ctx.inputs_are_log_probs:
                # normaliser term: - sum_{v: t*(v) = t} weighted[b, v] * softmax(x[b, t])
                per_position = torch.zeros_like(lse)
                per_position.scatter_add_(1, argmax, weighted)
            # both terms in float32, a chunk of positions at a time, rounded to x's dtype once: in bf16 the
            # two nearly cancel where the top probability is close to 1
            batch, length, vocab = x.shape
            grad_x = torch.empty_like(x)
            step = _chunk_size(length, batch * vocab)
            for start in range(0, length, step):
                sl = slice(start, start + step)
                positions = torch.arange(start, min(start + step, length), device=x.device)
                local = (argmax[:, None, :] == positions[None, :, None]).float() * weighted[:, None, :]
                if per_position is not None:
                    local -= (x[:, sl].float() - lse[:, sl, None]).exp_() * per_position[:, sl, None]
                grad_x[:, sl] = local.to(x.dtype)
            return grad_x, None, None, None
        x, lse, weights = ctx.saved_tensors
        batch, length, vocab = x.shape
        grad_x = torch.empty_like(x)
        step = _chunk_size(length, batch * vocab)
        for start in range(0, length, step):
            sl = slice(start, start + step)
            probs = (x[:, sl].float() - lse[:, sl, None]).exp_()
            local = probs * grad_q[:, None, :]
            if not ctx.inputs_are_log_probs:
                local -= probs * local.sum(dim=-1, keepdim=True)
            grad_x[:, sl] = (local * weights[:, sl, None]).to(x.dtype)
        return grad_x, None, None, None


def position_mean_weights(
    position_mask: torch.Tensor | None, batch: int, length: int, device: torch.device
) -> torch.Tensor:
    """Weights ``[B, n]`` that average over the valid positions of each row (zero for an empty row).

    The ``"mean"`` reduction of the MI loss is ``q[b] = sum_t weights[b, t] * softmax(R[b, t])``.

    Args:
        position_mask: boolean ``[B, n]``, True at the positions averaged over; None averages over all ``n``.
        batch: ``B``, the number of rows.
        length: ``n``, the number of positions.
        device: where the weights are made.

    Returns:
        A float32 ``[B, n]`` tensor whose rows sum to 1 (0 for a row with no True position).

    Examples:
        >>> import torch
        >>> mask = torch.tensor([[True, True, False], [False, False, False]])
        >>> position_mean_weights(mask, 2, 3, torch.device("cpu"))
        tensor([[0.5000, 0.5000, 0.0000],
                [0.0000, 0.0000, 0.0000]])
        >>> position_mean_weights(None, 1, 4, torch.device("cpu"))
        tensor([[0.2500, 0.2500, 0.2500, 0.2500]])
    """
    if position_mask is None:
        return torch.full((batch, length), 1.0 / length, dtype=torch.float32, device=device)
    mask = position_mask.float()
    return mask / mask.sum(dim=1, keepdim=True).clamp_min(1.0)


def _reduce_label_side(
    logits: torch.Tensor, position_mask: torch.Tensor | None, reduction: str
) -> torch.Tensor:
    """``p[b, v] = reduce_t softmax(Z[b, t])[v]`` with no gradient, ``[B, V]`` float32."""
    with torch.no_grad():
        batch, length, vocab = logits.shape
        out = torch.empty(batch, vocab, dtype=torch.float32, device=logits.device)
        step = _chunk_size(length, batch * vocab)
        weights = position_mean_weights(position_mask, batch, length, logits.device)
        if reduction == "max":
            out.fill_(float("-inf"))
        else:
            out.zero_()
        for start in range(0, length, step):
            sl = slice(start, start + step)
            probs = torch.softmax(logits[:, sl].float(), dim=-1)
            if reduction == "max":
                if position_mask is not None:
                    probs.masked_fill_(~position_mask[:, sl, None], float("-inf"))
                torch.maximum(out, probs.max(dim=1).values, out=out)
            else:
                with torch.autocast(logits.device.type, enabled=False):  # float32, as in _ReducedSoftmax
                    out += torch.einsum("btv,bt->bv", probs, weights[:, sl])
        return out


def check_mi_loss_inputs(
    label_logits: torch.Tensor,
    rationale_logits: torch.Tensor,
    label_mask: torch.Tensor | None,
    rationale_mask: torch.Tensor | None,
    reduction: str,
    divergence: str,
    variant: str,
) -> None:
    """Refuse options and tensors the MI loss cannot take, with a ``ValueError`` naming the argument.

    The checks of :func:`mutual_information_loss`: ``reduction``, ``divergence`` and ``variant`` among the
    supported ones, both logits 3-D floating-point ``[batch, positions, vocab]`` with at least one position,
    the same batch and vocabulary sizes, and each mask (when given) boolean ``[batch, positions]``.

    Args:
        label_logits: ``[B, m, V]`` label-pass logits.
        rationale_logits: ``[B, n, V]`` rationale-pass logits (or log-probabilities).
        label_mask: boolean ``[B, m]`` or None.
        rationale_mask: boolean ``[B, n]`` or None.
        reduction: one of :data:`REDUCTIONS`.
        divergence: one of :data:`DIVERGENCES`.
        variant: one of :data:`VARIANTS`.

    Raises:
        ValueError: the first problem found, naming the argument and what was expected.

    Examples:
        >>> import torch
        >>> check_mi_loss_inputs(torch.zeros(2, 3, 5), torch.zeros(2, 4, 5), None, None, "max", "ce", "paper")
        >>> check_mi_loss_inputs(torch.zeros(2, 3, 5), torch.zeros(2, 4, 5), None, None, "sum", "ce", "paper")
        Traceback (most recent call last):
        ...
        ValueError: reduction='sum' is not supported; expected one of 'max', 'mean'
    """
    for name, value, choices in (
        ("reduction", reduction, REDUCTIONS),
        ("divergence", divergence, DIVERGENCES),
        ("variant", variant, VARIANTS),
    ):
        if value not in choices:
            expected = ", ".join(map(repr, choices))
            raise ValueError(f"{name}={value!r} is not supported; expected one of {expected}")
    for name, tensor in (("label_logits", label_logits), ("rationale_logits", rationale_logits)):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must be a 3-D tensor [batch, positions, vocab], got {shape}")
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
        if tensor.shape[1] == 0:
            raise ValueError(f"{name} has no decoder positions (shape {tuple(tensor.shape)})")
    if label_logits.shape[0] != rationale_logits.shape[0]:
        raise ValueError(
            f"rationale_logits has batch size {rationale_logits.shape[0]} but label_logits has "
            f"{label_logits.shape[0]}; both passes must cover the same examples"
        )
    if label_logits.shape[2] != rationale_logits.shape[2]:
        raise ValueError(
            f"rationale_logits has vocabulary size {rationale_logits.shape[2]} but label_logits has "
            f"{label_logits.shape[2]}; both must come from the same LM head"
        )
    for name, mask, logits in (
        ("label_mask", label_mask, label_logits),
        ("rationale_mask", rationale_mask, rationale_logits),
    ):
        if mask is None:
            continue
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(logits.shape[:2]):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(
                f"{name} must have shape {tuple(logits.shape[:2])} (batch, positions), got {shape}"
            )
        if mask.dtype != torch.bool:
            raise ValueError(
                f"{name} must be a boolean tensor (True at real positions), got dtype {mask.dtype}"
            )


def mutual_information_loss(
    label_logits: torch.Tensor,
    rationale_logits: torch.Tensor,
    *,
    label_mask: torch.Tensor | None = None,
    rationale_mask: torch.Tensor | None = None,
    reduction: str = "max",
    divergence: str = "ce",
    variant: str = "paper",
    inputs_are_log_probs: bool = False,
) -> torch.Tensor:
    """The MI auxiliary loss between the label pass and the rationale pass of a DSS student.

    With ``p[b] = reduce_t softmax(Z[b, t])`` (detached) and ``q[b] = reduce_t softmax(R[b, t])``:

    - ``variant="paper"``, ``divergence="ce"`` (the released code, bit for bit): every position is reduced
      (masks are ignored) and ``L = mean_b sum_v -p[b, v] * log_softmax(q[b])[v]``, a cross-entropy whose
      input ``q`` goes through a second softmax, with the unnormalised ``p`` as soft target. It equals
      ``torch.nn.CrossEntropyLoss()(q, p)``.
    - ``variant="masked"``, ``divergence="ce"``: positions where the mask is False are left out of the
      reduction on both sides, and ``L = mean_b sum_v -p_norm[b, v] * log q_norm[b, v]`` with
      ``x_norm = x / sum_v x`` (no second softmax). Rows with no valid position on either side add 0.
    - ``divergence="kl"`` (not in the paper): ``L = mean_b KL(p_norm[b] || q_norm[b])``; masking as the
      variant says.

    The label side never receives a gradient. ``reduction="max"`` routes the gradient of each ``(b, v)`` to
    the one position that attains the maximum.

    Args:
        label_logits: ``[B, m, V]`` decoder logits of the ``predict:`` pass.
        rationale_logits: ``[B, n, V]`` decoder logits of the ``explain:`` pass.
        label_mask: boolean ``[B, m]``, True at real (non-padding) label positions. Used by ``"masked"``.
        rationale_mask: boolean ``[B, n]``, True at real rationale positions. Used by ``"masked"``.
        reduction: ``"max"`` (paper) or ``"mean"`` over decoder positions.
        divergence: ``"ce"`` (paper) or ``"kl"``.
        variant: ``"paper"`` (released behaviour: no masking, double softmax) or ``"masked"``.
        inputs_are_log_probs: set True when both inputs are already ``log_softmax`` outputs (the trainer
            passes the log-probabilities its cross-entropy computed, so this term saves nothing of size
            ``[B, n, V]`` for the backward pass). The result is the same; only the work differs.

    Returns:
        A scalar float32 tensor.

    Raises:
        ValueError: wrong shapes, mismatched batch or vocabulary sizes, or an unknown option.

    Examples:
        >>> import torch
        >>> z, r = torch.randn(2, 3, 10), torch.randn(2, 5, 10, requires_grad=True)
        >>> loss = mutual_information_loss(z, r)
        >>> loss.backward()
        >>> r.grad.shape
        torch.Size([2, 5, 10])
    """
    check_mi_loss_inputs(
        label_logits, rationale_logits, label_mask, rationale_mask, reduction, divergence, variant
    )
    if variant == "paper":
        label_mask = rationale_mask = None
    p = _reduce_label_side(label_logits.detach(), label_mask, reduction)
    q = _ReducedSoftmax.apply(rationale_logits, rationale_mask, reduction, inputs_are_log_probs)
    return mi_loss_from_reduced(p, q, label_mask, rationale_mask, divergence, variant)


def mi_loss_from_reduced(
    p: torch.Tensor,
    q: torch.Tensor,
    label_mask: torch.Tensor | None,
    rationale_mask: torch.Tensor | None,
    divergence: str,
    variant: str,
) -> torch.Tensor:
    """The loss between the reduced label side ``p`` (no gradient) and rationale side ``q``, ``[B, V]`` each.

    The last step of :func:`mutual_information_loss`, once both sides are reduced over positions; the
    formulas of each ``variant`` and ``divergence`` are given there. Rows where a given mask has no True
    position add 0 to the mean.

    Args:
        p: ``[B, V]`` reduced label side.
        q: ``[B, V]`` reduced rationale side.
        label_mask: boolean ``[B, m]`` or None; only which rows have a valid position is read.
        rationale_mask: boolean ``[B, n]`` or None; likewise.
        divergence: ``"ce"`` or ``"kl"``.
        variant: ``"paper"`` or ``"masked"``.

    Returns:
        A scalar float tensor.

    Examples:
        >>> import torch
        >>> mi_loss_from_reduced(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), None, None, "ce", "paper")
        tensor(0.6931)
        >>> half = torch.tensor([[0.5, 0.5]])
        >>> mi_loss_from_reduced(half, half, None, None, "kl", "masked")
        tensor(0.)
    """
    if variant == "paper" and divergence == "ce":
        return F.cross_entropy(q, p)

    valid_rows = torch.ones(q.shape[0], dtype=torch.bool, device=q.device)
    if label_mask is not None:
        valid_rows &= label_mask.any(dim=1)
    if rationale_mask is not None:
        valid_rows &= rationale_mask.any(dim=1)
    # Empty rows would divide 0 by 0: give them a harmless stand-in and zero their contribution.
    p = torch.where(valid_rows[:, None], p, torch.ones_like(p))
    q = torch.where(valid_rows[:, None], q, torch.ones_like(q))
    p_norm = p / p.sum(dim=1, keepdim=True)
    log_q_norm = q.clamp_min(torch.finfo(q.dtype).tiny).log() - q.sum(dim=1, keepdim=True).log()
    per_row = -(p_norm * log_q_norm).sum(dim=1)
    if divergence == "kl":
        per_row = per_row + torch.xlogy(p_norm, p_norm).sum(dim=1)
    return torch.where(valid_rows, per_row, torch.zeros_like(per_row)).mean()


class _NLLAndReducedSoftmax(torch.autograd.Function):
    """From rationale log-probabilities: the summed NLL of the targets and ``q = reduce_t exp(x)``.

    One backward pass writes one gradient tensor for both terms, where separate ``nll_loss`` and
    ``_ReducedSoftmax`` nodes would each write a dense ``[B, n, V]`` gradient and autograd would add them.
    """

    @staticmethod
    def forward(ctx, log_probs, targets, position_mask, reduction):  # type: ignore[override]
        valid = targets.ne(-100)
        safe_targets = targets.masked_fill(~valid, 0)
        picked = log_probs.gather(-1, safe_targets[..., None]).squeeze(-1).float()
        # where, not a product: a -inf read at an ignored position would give -inf * 0 = NaN
        nll_sum = -torch.where(valid, picked, 0.0).sum()
        q = _ReducedSoftmax.forward(ctx, log_probs, position_mask, reduction, True)
        ctx.targets = (safe_targets, valid)
        return nll_sum, q

    @staticmethod
    def backward(ctx, grad_nll, grad_q):  # type: ignore[override]
        if grad_q is None:
            grad_x = torch.zeros_like(ctx.saved_tensors[0])
        else:
            grad_x = _ReducedSoftmax.backward(ctx, grad_q)[0]
        if grad_nll is None:
            return grad_x, None, None, None
        safe_targets, valid = ctx.targets
        grad_x.scatter_add_(-1, safe_targets[..., None], (-grad_nll * valid).to(grad_x.dtype)[..., None])
        return grad_x, None, None, None


def rationale_nll_and_mutual_information(
    rationale_log_probs: torch.Tensor,
    rationale_labels: torch.Tensor,
    label_logits: torch.Tensor,
    *,
    label_mask: torch.Tensor | None = None,
    reduction: str = "max",
    divergence: str = "ce",
    variant: str = "paper",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed rationale NLL and the MI loss from one ``log_softmax`` of the rationale logits.

    Equal in value and gradient to ``F.nll_loss(rationale_log_probs, rationale_labels, reduction="sum",
    ignore_index=-100)`` and ``mutual_information_loss(label_logits, rationale_log_probs, ...,
    inputs_are_log_probs=True)`` with ``rationale_mask = rationale_labels != -100``, but the backward pass
    writes a single ``[B, n, V]`` gradient for both. This is what :class:`~hf_cotmi.DSSMITrainer` uses.

    Args:
        rationale_log_probs: ``[B, n, V]`` ``log_softmax`` of the rationale-pass logits.
        rationale_labels: ``[B, n]`` target ids, ``-100`` at padding.
        label_logits: ``[B, m, V]`` label-pass logits (no gradient flows into them).
        label_mask: boolean ``[B, m]``, True at real label positions.
        reduction: see :func:`mutual_information_loss`.
        divergence: see :func:`mutual_information_loss`.
        variant: see :func:`mutual_information_loss`.

    Returns:
        ``(nll_sum, mi_loss)``, two scalar float32 tensors.

    Examples:
        >>> import torch
        >>> logp = torch.log_softmax(torch.randn(2, 4, 9, requires_grad=True), -1)
        >>> nll, mi = rationale_nll_and_mutual_information(logp, torch.tensor([[1, 2, -100, -100]] * 2),
        ...                                                torch.randn(2, 3, 9))
        >>> (nll + mi).backward()
    """
    rationale_mask = rationale_labels.ne(-100)
    check_mi_loss_inputs(
        label_logits, rationale_log_probs, label_mask, rationale_mask, reduction, divergence, variant
    )
    if variant == "paper":
        label_mask = None
    position_mask = rationale_mask if variant == "masked" else None
    p = _reduce_label_side(label_logits.detach(), label_mask, reduction)
    nll_sum, q = _NLLAndReducedSoftmax.apply(rationale_log_probs, rationale_labels, position_mask, reduction)
    return nll_sum, mi_loss_from_reduced(p, q, label_mask, position_mask, divergence, variant)
