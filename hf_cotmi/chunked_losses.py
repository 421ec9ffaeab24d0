"""The DSS cross-entropies and the MI term from hidden states, never holding the ``[B, n, V]`` logits.

The output projection ``logits = hidden @ weight.T`` is applied to a chunk of decoder positions at a time
(all rows of the batch, ``chunk_size`` tokens in all). For the backward pass the forward keeps only the
hidden states, the weight (a parameter anyway) and, for the MI term, the reduced rationale distribution
``q`` (``[B, V]``) with its arg-max positions; the backward pass recomputes each chunk's logits from the
hidden states and the weight and turns them into the gradients of both.

The values and gradients equal those of the unchunked path (:func:`hf_cotmi.losses.mutual_information_loss`
and ``F.cross_entropy`` on the full logits), up to floating-point summation order. The price is one more
product with the output projection per pass (the recomputation in backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import REDUCTIONS, check_mi_loss_inputs, mi_loss_from_reduced, position_mean_weights

DEFAULT_CHUNK_SIZE = 1024
"""Default tokens (batch rows x positions) whose logits exist at once."""


def _compute_dtype(device: torch.device, weight: torch.Tensor) -> torch.dtype:
    """The dtype an ``nn.Linear`` would compute in here: the autocast dtype when autocast is on."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight.dtype


def _positions_per_chunk(chunk_size: int, batch: int, length: int) -> int:
    return max(1, min(length, chunk_size // max(1, batch)))


class _ChunkedProjectionLoss(torch.autograd.Function):
    """From hidden states ``[B, n, d]`` and a head weight ``[V, d]``: the summed target NLL and, optionally,
    ``q[b, v] = reduce_t softmax(logits[b, t])[v]`` over the positions ``position_mask`` allows (all when it
    is None). The logits are computed ``chunk`` positions at a time, in forward and again in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, position_mask, reduction, chunk, compute_dtype):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        batch, length, _ = hidden.shape
        vocab = weight.shape[0]
        device = hidden.device
        valid = targets.ne(-100)
        safe_targets = targets.masked_fill(~valid, 0)
        nll_sum = torch.zeros((), dtype=torch.float32, device=device)
        q = argmax = weights = None
        if reduction == "max":
            best = torch.full((batch, vocab), float("-inf"), dtype=torch.float32, device=device)
            argmax = torch.zeros(batch, vocab, dtype=torch.long, device=device)
        elif reduction == "mean":
            q = torch.zeros(batch, vocab, dtype=torch.float32, device=device)
            weights = position_mean_weights(position_mask, batch, length, device)
        with torch.autocast(device.type, enabled=False):
            weight_c = weight.to(compute_dtype)
            for start in range(0, length, chunk):
                sl = slice(start, start + chunk)
                log_probs = torch.log_softmax(
                    F.linear(hidden[:, sl].to(compute_dtype), weight_c), dim=-1, dtype=torch.float32
                )
                picked = log_probs.gather(-1, safe_targets[:, sl, None]).squeeze(-1)
                nll_sum -= torch.where(valid[:, sl], picked, 0.0).sum()  # not picked * valid: -inf * 0 is NaN
                if reduction == "max":
                    if position_mask is not None:
                        log_probs.masked_fill_(~position_mask[:, sl, None], float("-inf"))
                    values, index = log_probs.max(dim=1)
                    better = values > best
                    best = torch.where(better, values, best)
                    argmax = torch.where(better, index + start, argmax)
                elif reduction == "mean":
                    q += torch.einsum("btv,bt->bv", log_probs.exp_(), weights[:, sl])
                del log_probs
        if reduction == "max":
            q = best.exp_()
        ctx.reduction, ctx.chunk, ctx.compute_dtype = reduction, chunk, compute_dtype
        ctx.save_for_backward(hidden, weight, safe_targets, valid, argmax, q, weights)
        if q is None:
            q = torch.empty(0, device=device)
            ctx.mark_non_differentiable(q)
        return nll_sum, q

    @staticmethod
    def backward(ctx, grad_nll, grad_q):  # type: ignore[override]
        hidden, weight, safe_targets, valid, argmax, q, weights = ctx.saved_tensors
        reduction, chunk, compute_dtype = ctx.reduction, ctx.chunk, ctx.compute_dtype
        if grad_q is not None and reduction is None:
            grad_q = None
        needs_hidden, needs_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (grad_nll is None and grad_q is None) or not (needs_hidden or needs_weight):
            return None, None, None, None, None, None, None
        batch, length, _ = hidden.shape
        device = hidden.device
        # Per-position coefficient of the dense softmax term of the logit gradient, [B, n].
        coefficient = torch.zeros(batch, length, dtype=torch.float32, device=device)
        if grad_nll is not None:
            coefficient += grad_nll.float() * valid
        if grad_q is not None:
            grad_q = grad_q.float()
            if reduction == "max":
                routed = grad_q * q  # d q[b, v] / d logits[b, t*, v] = q[b, v]
                # normaliser: - sum over the v whose maximum is at t of routed[b, v], times softmax(logits[b, t])
                coefficient.scatter_add_(1, argmax, -routed)
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = None
        with torch.autocast(device.type, enabled=False):
            weight_c = weight.to(compute_dtype)
            for start in range(0, length, chunk):
                sl = slice(start, start + chunk)
                width = min(chunk, length - start)
                hidden_c = hidden[:, sl].to(compute_dtype)
                probs = torch.softmax(F.linear(hidden_c, weight_c), dim=-1, dtype=torch.float32)
                if grad_q is not None and reduction == "mean":
                    dot = torch.einsum("btv,bv->bt", probs, grad_q) * weights[:, sl]
                    scaled = weights[:, sl, None] * grad_q[:, None, :]
                    scaled += (coefficient[:, sl] - dot)[:, :, None]
                    grad_logits = probs.mul_(scaled)
                    del scaled
                else:
                    grad_logits = probs.mul_(coefficient[:, sl, None])
                if grad_nll is not None:
                    picked = (-grad_nll.float() * valid[:, sl])[:, :, None]
                    grad_logits.scatter_add_(-1, safe_targets[:, sl, None], picked)
                if grad_q is not None and reduction == "max":
                    # each (row, vocab) gradient goes to the position that held the max, when it is in this
                    # chunk; a scatter over a mask, not indices picked with nonzero (a host-device sync)
                    in_chunk = (argmax >= start) & (argmax < start + width)
                    local = (argmax - start).clamp(0, width - 1)
                    grad_logits.scatter_add_(1, local[:, None, :], (routed * in_chunk)[:, None, :])
                grad_logits = grad_logits.to(compute_dtype)
                if needs_hidden:
                    grad_hidden[:, sl] = (grad_logits @ weight_c).to(hidden.dtype)
                if needs_weight:
                    flat_grad = grad_logits.reshape(-1, grad_logits.shape[-1]).T
                    flat_hidden = hidden_c.reshape(-1, hidden_c.shape[-1])
                    if grad_weight is None:
                        grad_weight = (flat_grad @ flat_hidden).float()
                    elif compute_dtype == torch.float32:
                        grad_weight.addmm_(flat_grad, flat_hidden)
                    else:
                        grad_weight += (flat_grad @ flat_hidden).float()
                del grad_logits, probs
        if needs_weight:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None


def _check_projection_inputs(
    name: str, hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor
) -> None:
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or not hidden.is_floating_point():
        shape = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
        raise ValueError(
            f"{name}_hidden must be a 3-D floating-point tensor [batch, positions, hidden], got {shape}"
        )
    if hidden.shape[1] == 0:
        raise ValueError(f"{name}_hidden has no decoder positions (shape {tuple(hidden.shape)})")
    if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != tuple(hidden.shape[:2]):
        shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ValueError(
            f"{name}_labels must have shape {tuple(hidden.shape[:2])} (batch, positions), got {shape}"
        )
    if weight.shape[1] != hidden.shape[2]:
        raise ValueError(
            f"{name}_hidden has hidden size {hidden.shape[2]} but the output projection weight is "
            f"{tuple(weight.shape)} [vocab, hidden]"
        )


def chunked_linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> torch.Tensor:
    """Summed cross-entropy of ``labels`` under ``hidden @ weight.T``, computed ``chunk_size`` tokens at a time.

    Equal in value and gradient to ``F.cross_entropy(F.linear(hidden, weight).flatten(0, 1), labels.flatten(),
    ignore_index=-100, reduction="sum")``; the backward pass recomputes each chunk's logits instead of keeping
    them. Under autocast the product runs in the autocast dtype (as ``nn.Linear`` would), the softmax in float32.

    Args:
        hidden: ``[B, n, d]`` inputs of the output projection.
        weight: ``[V, d]`` output projection weight (no bias).
        labels: ``[B, n]`` target ids, ``-100`` where there is none.
        chunk_size: tokens (rows x positions) projected at once; ``chunk_size // B`` positions per chunk.

    Returns:
        A scalar float32 tensor.

    Examples:
        >>> import torch
        >>> h, w = torch.randn(2, 5, 4, requires_grad=True), torch.randn(11, 4, requires_grad=True)
        >>> loss = chunked_linear_cross_entropy(h, w, torch.tensor([[1, 2, 3, -100, -100], [4, 5, 6, 7, 8]]),
        ...                                     chunk_size=4)
        >>> loss.backward()
        >>> h.grad.shape, w.grad.shape
        (torch.Size([2, 5, 4]), torch.Size([11, 4]))
    """
    _check_projection_inputs("", hidden, labels, weight)
    chunk = _check_chunk_size(chunk_size)
    steps = _positions_per_chunk(chunk, hidden.shape[0], hidden.shape[1])
    dtype = _compute_dtype(hidden.device, weight)
    nll_sum, _ = _ChunkedProjectionLoss.apply(hidden, weight, labels, None, None, steps, dtype)
    return nll_sum


def _shape_only(hidden: torch.Tensor, vocab: int) -> torch.Tensor:
    """A ``[B, n, V]`` stand-in that takes no memory (an expanded scalar), for the shape checks."""
    return hidden.new_zeros(()).expand(*hidden.shape[:2], vocab)


def _check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1 (tokens per chunk), got {chunk_size!r}")
    return chunk_size


def chunked_dss_losses(
    weight: torch.Tensor,
    label_hidden: torch.Tensor,
    label_labels: torch.Tensor,
    rationale_hidden: torch.Tensor | None = None,
    rationale_labels: torch.Tensor | None = None,
    *,
    mutual_information: bool = True,
    reduction: str = "max",
    divergence: str = "ce",
    variant: str = "paper",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The summed label NLL, the summed rationale NLL and the MI loss from the output projection's inputs.

    The same three numbers (and gradients) as projecting both passes to logits and computing
    ``F.cross_entropy(..., reduction="sum")`` on each and
    :func:`~hf_cotmi.mutual_information_loss` (``label_mask = label_labels != -100``, ``rationale_mask =
    rationale_labels != -100``) on the pair, but no ``[B, n, V]`` tensor outlives its chunk: the backward pass
    recomputes the logits chunk by chunk. No gradient reaches the label side through the MI term.

    Args:
        weight: ``[V, d]`` output projection weight (``model.get_output_embeddings().weight``; no bias).
        label_hidden: ``[B, m, d]`` inputs of the output projection in the ``predict:`` pass, at the
            positions that predict ``label_labels``.
        label_labels: ``[B, m]`` label target ids, ``-100`` at padding.
        rationale_hidden: ``[B, n, d]`` the same for the ``explain:`` pass; None skips the rationale terms.
        rationale_labels: ``[B, n]`` rationale target ids, ``-100`` at padding.
        mutual_information: also compute the MI term (needs the rationale pass).
        reduction: ``"max"`` or ``"mean"`` over positions (see :func:`~hf_cotmi.mutual_information_loss`).
        divergence: ``"ce"`` or ``"kl"``.
        variant: ``"paper"`` (every position reduced, double softmax) or ``"masked"``.
        chunk_size: tokens (rows x positions) projected at once; ``chunk_size // B`` positions per chunk
            (at least one). A chunk's logits take ``chunk_size * V * 4`` bytes in float32.

    Returns:
        ``(label_nll_sum, rationale_nll_sum, mi_loss)``: scalar float32 tensors; the last two are None when
        the rationale pass (or the MI term) is left out. The MI loss is a mean over examples.

    Raises:
        ValueError: wrong shapes, mismatched batch or hidden sizes, an unknown option or a bad chunk size.

    Examples:
        >>> import torch
        >>> w = torch.randn(13, 4, requires_grad=True)
        >>> h_label, h_rationale = torch.randn(2, 3, 4), torch.randn(2, 6, 4, requires_grad=True)
        >>> y_label = torch.tensor([[1, 2, -100], [3, 4, 5]])
        >>> y_rationale = torch.tensor([[1, 2, 3, 4, -100, -100], [5, 6, 7, 8, 9, 10]])
        >>> label, rationale, mi = chunked_dss_losses(w, h_label, y_label, h_rationale, y_rationale, chunk_size=3)
        >>> (0.5 * label + 0.5 * rationale + 0.1 * mi).backward()
        >>> h_rationale.grad.shape
        torch.Size([2, 6, 4])
    """
    chunk = _check_chunk_size(chunk_size)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a 2-D floating-point tensor [vocab, hidden], got {shape}")
    _check_projection_inputs("label", label_hidden, label_labels, weight)
    if rationale_hidden is None:
        mutual_information = False
    else:
        _check_projection_inputs("rationale", rationale_hidden, rationale_labels, weight)
        if rationale_hidden.shape[0] != label_hidden.shape[0]:
            raise ValueError(
                f"rationale_hidden has batch size {rationale_hidden.shape[0]} but label_hidden has "
                f"{label_hidden.shape[0]}; both passes must cover the same examples"
            )
    if mutual_information:
        vocab = weight.shape[0]
        # The option checks of the unchunked MI loss, on stand-in shapes.
        label_mask, rationale_mask = label_labels.ne(-100), rationale_labels.ne(-100)
        check_mi_loss_inputs(
            _shape_only(label_hidden, vocab),
            _shape_only(rationale_hidden, vocab),
            label_mask,
            rationale_mask,
            reduction,
            divergence,
            variant,
        )
        if reduction not in REDUCTIONS:  # pragma: no cover - check_mi_loss_inputs refuses it
            raise ValueError(f"reduction={reduction!r} is not supported")
        if variant == "paper":
            label_mask = rationale_mask = None
    dtype = _compute_dtype(label_hidden.device, weight)
    batch = label_hidden.shape[0]
    mi_reduction = reduction if mutual_information else None
    label_sum, p = _ChunkedProjectionLoss.apply(
        label_hidden,
        weight,
        label_labels,
        label_mask if mutual_information else None,
        mi_reduction,
        _positions_per_chunk(chunk, batch, label_hidden.shape[1]),
        dtype,
    )
    if rationale_hidden is None:
        return label_sum, None, None
    rationale_sum, q = _ChunkedProjectionLoss.apply(
        rationale_hidden,
        weight,
        rationale_labels,
        rationale_mask if mutual_information else None,
        mi_reduction,
        _positions_per_chunk(chunk, batch, rationale_hidden.shape[1]),
        dtype,
    )
    if not mutual_information:
        return label_sum, rationale_sum, None
    return (
        label_sum,
        rationale_sum,
        mi_loss_from_reduced(p.detach(), q, label_mask, rationale_mask, divergence, variant),
    )
