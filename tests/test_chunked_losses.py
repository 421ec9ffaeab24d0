"""The chunked output projection equals the unchunked path in value and gradient, and holds no logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_cotmi.chunked_losses import chunked_dss_losses, chunked_linear_cross_entropy
from hf_cotmi.losses import mutual_information_loss

BATCH, LABEL_LEN, RATIONALE_LEN, HIDDEN, VOCAB = 3, 4, 9, 6, 17


def make_inputs(seed=0, empty_rows=True):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(VOCAB, HIDDEN, generator=generator)
    label_hidden = torch.randn(BATCH, LABEL_LEN, HIDDEN, generator=generator)
    rationale_hidden = torch.randn(BATCH, RATIONALE_LEN, HIDDEN, generator=generator)
    label_labels = torch.randint(0, VOCAB, (BATCH, LABEL_LEN), generator=generator)
    rationale_labels = torch.randint(0, VOCAB, (BATCH, RATIONALE_LEN), generator=generator)
    label_labels[1, 2:] = -100  # padded positions
    rationale_labels[0, 5:] = -100
    if empty_rows:
        rationale_labels[2] = -100  # a row with no rationale target at all
        label_labels[0] = -100  # and one with no label target
    return weight, label_hidden, label_labels, rationale_hidden, rationale_labels


def unchunked(weight, label_hidden, label_labels, rationale_hidden, rationale_labels, **mi):
    """The reference: full logits, F.cross_entropy and the (separately tested) unchunked MI loss."""
    label_logits = F.linear(label_hidden, weight)
    rationale_logits = F.linear(rationale_hidden, weight)
    label_sum = F.cross_entropy(label_logits.flatten(0, 1), label_labels.flatten(), reduction="sum")
    rationale_sum = F.cross_entropy(
        rationale_logits.flatten(0, 1), rationale_labels.flatten(), reduction="sum"
    )
    mi_loss = mutual_information_loss(
        label_logits.detach(),
        rationale_logits,
        label_mask=label_labels.ne(-100),
        rationale_mask=rationale_labels.ne(-100),
        **mi,
    )
    return label_sum, rationale_sum, mi_loss


def values_and_grads(function, inputs, **kwargs):
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = inputs
    leaves = [t.clone().requires_grad_(True) for t in (weight, label_hidden, rationale_hidden)]
    label_sum, rationale_sum, mi_loss = function(
        leaves[0], leaves[1], label_labels, leaves[2], rationale_labels, **kwargs
    )
    total = 0.5 * label_sum + 0.5 * rationale_sum + 0.7 * mi_loss
    grads = torch.autograd.grad(total, leaves)
    return [label_sum.detach(), rationale_sum.detach(), mi_loss.detach()], grads


def chunked(weight, label_hidden, label_labels, rationale_hidden, rationale_labels, chunk_size, **mi):
    return chunked_dss_losses(
        weight, label_hidden, label_labels, rationale_hidden, rationale_labels, chunk_size=chunk_size, **mi
    )


@pytest.mark.parametrize("chunk_size", [1, 5, 7, 1000])
@pytest.mark.parametrize("divergence", ["ce", "kl"])
@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("variant", ["paper", "masked"])
def test_value_and_gradient_equal_the_unchunked_path(variant, reduction, divergence, chunk_size):
    inputs = make_inputs(seed=chunk_size)
    mi = dict(variant=variant, reduction=reduction, divergence=divergence)
    expected, expected_grads = values_and_grads(unchunked, inputs, **mi)
    got, got_grads = values_and_grads(chunked, inputs, chunk_size=chunk_size, **mi)
    for name, a, b in zip(("label", "rationale", "mi"), got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)
    for name, a, b in zip(("weight", "label_hidden", "rationale_hidden"), got_grads, expected_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)
    assert float(expected_grads[2].abs().sum()) > 0  # the rationale side really gets a gradient
    # the MI term sends nothing to the label side: its gradient is the label cross-entropy's alone
    label_only = values_and_grads(chunked, inputs, chunk_size=chunk_size, **mi)[1]
    assert label_only[1].abs().sum() > 0


def test_mi_gradient_alone_matches_and_reaches_every_chunk():
    """Only the MI term: a gradient that is easy to get wrong in the max routing across chunk borders."""
    inputs = make_inputs(seed=3, empty_rows=False)
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = inputs
    for reduction in ("max", "mean"):
        grads = []
        for function in ("unchunked", "chunked"):
            hidden = rationale_hidden.clone().requires_grad_(True)
            w = weight.clone().requires_grad_(True)
            if function == "unchunked":
                _, _, mi_loss = unchunked(
                    w, label_hidden, label_labels, hidden, rationale_labels, reduction=reduction
                )
            else:
                _, _, mi_loss = chunked(
                    w, label_hidden, label_labels, hidden, rationale_labels, 2, reduction=reduction
                )
            grads.append(torch.autograd.grad(mi_loss, (hidden, w)))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert (grads[1][0].abs().sum(dim=-1) > 0).sum() > RATIONALE_LEN  # many positions, not just one chunk


def test_without_rationale_or_mi():
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = make_inputs()
    label_sum, rationale_sum, mi_loss = chunked_dss_losses(weight, label_hidden, label_labels, chunk_size=2)
    assert rationale_sum is None and mi_loss is None
    expected = F.cross_entropy(
        F.linear(label_hidden, weight).flatten(0, 1), label_labels.flatten(), reduction="sum"
    )
    torch.testing.assert_close(label_sum, expected)
    _, rationale_sum, mi_loss = chunked_dss_losses(
        weight, label_hidden, label_labels, rationale_hidden, rationale_labels, mutual_information=False
    )
    assert mi_loss is None and rationale_sum.item() > 0


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_linear_cross_entropy_matches_f_cross_entropy(chunk_size):
    weight, _, _, hidden, labels = make_inputs(seed=7)
    w, h = weight.clone().requires_grad_(True), hidden.clone().requires_grad_(True)
    got = chunked_linear_cross_entropy(h, w, labels, chunk_size=chunk_size)
    got_grads = torch.autograd.grad(got * 1.7, (h, w))
    w2, h2 = weight.clone().requires_grad_(True), hidden.clone().requires_grad_(True)
    expected = F.cross_entropy(F.linear(h2, w2).flatten(0, 1), labels.flatten(), reduction="sum")
    expected_grads = torch.autograd.grad(expected * 1.7, (h2, w2))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for a, b in zip(got_grads, expected_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_backward_holds_hidden_states_not_logits():
    """What autograd saves between forward and backward is never as large as one pass's logits."""
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = make_inputs()
    leaves = [t.clone().requires_grad_(True) for t in (weight, label_hidden, rationale_hidden)]
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        label_sum, rationale_sum, mi_loss = chunked_dss_losses(
            leaves[0], leaves[1], label_labels, leaves[2], rationale_labels, chunk_size=3, variant="masked"
        )
        (label_sum + rationale_sum + mi_loss).backward()
    assert sizes and max(sizes) < BATCH * RATIONALE_LEN * VOCAB
    # the unchunked path does save the logits (this check can fail)
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unchunked(leaves[0], leaves[1], label_labels, leaves[2], rationale_labels)
    assert max(sizes) >= BATCH * RATIONALE_LEN * VOCAB


def test_bf16_autocast_is_close_to_the_unchunked_path():
    inputs = make_inputs(seed=11, empty_rows=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, expected_grads = values_and_grads(unchunked, inputs, variant="masked")
        got, got_grads = values_and_grads(chunked, inputs, chunk_size=4, variant="masked")
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)
    for a, b in zip(got_grads, expected_grads):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=3e-2, rtol=5e-2)


def test_frozen_weight_gets_no_gradient_and_hidden_still_does():
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = make_inputs()
    hidden = rationale_hidden.clone().requires_grad_(True)
    _, rationale_sum, mi_loss = chunked_dss_losses(
        weight, label_hidden, label_labels, hidden, rationale_labels
    )
    (rationale_sum + mi_loss).backward()
    assert weight.grad is None and hidden.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(chunk_size=0), "chunk_size must be an integer >= 1"),
        (dict(reduction="min"), "reduction='min' is not supported"),
        (dict(variant="other"), "variant='other' is not supported"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = make_inputs()
    with pytest.raises(ValueError, match=message):
        chunked_dss_losses(weight, label_hidden, label_labels, rationale_hidden, rationale_labels, **kwargs)


def test_bad_shapes_are_refused():
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = make_inputs()
    with pytest.raises(ValueError, match="rationale_labels must have shape"):
        chunked_dss_losses(weight, label_hidden, label_labels, rationale_hidden, rationale_labels[:, :3])
    with pytest.raises(ValueError, match="hidden size 5"):
        chunked_dss_losses(weight, label_hidden[..., :5], label_labels)
    with pytest.raises(ValueError, match="batch size 2"):
        chunked_dss_losses(weight, label_hidden, label_labels, rationale_hidden[:2], rationale_labels[:2])


def test_minus_inf_logits_at_ignored_positions_leave_the_sums_finite():
    """Ignored targets are read at token 0; a -inf logit there must not make ``-inf * 0 = NaN`` of the sum
    (``F.cross_entropy(ignore_index=-100)`` skips those positions)."""
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = make_inputs(seed=4)
    weight[0] = float("-inf")  # with positive hidden states, token 0 gets a -inf logit everywhere
    label_hidden, rationale_hidden = label_hidden.abs() + 0.1, rationale_hidden.abs() + 0.1
    label_labels = label_labels.masked_fill(label_labels.eq(0), 1)
    rationale_labels = rationale_labels.masked_fill(rationale_labels.eq(0), 1)
    ours_w, ref_w = weight.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    label_sum, rationale_sum, mi = chunked_dss_losses(
        ours_w, label_hidden, label_labels, rationale_hidden, rationale_labels, chunk_size=4
    )
    ours = label_sum + rationale_sum
    ref = sum(
        -torch.log_softmax(hidden[b, t] @ ref_w.T, -1)[labels[b, t]]
        for hidden, labels in ((label_hidden, label_labels), (rationale_hidden, rationale_labels))
        for b, t in labels.ne(-100).nonzero().tolist()
    )
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-6)
    assert torch.isfinite(mi)
    single = chunked_linear_cross_entropy(rationale_hidden, weight, rationale_labels, chunk_size=4)
    torch.testing.assert_close(single, rationale_sum, atol=0, rtol=0)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours_w.grad, ref_w.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("divergence", ["ce", "kl"])
def test_bf16_autocast_mean_reduction_mi_equals_the_unchunked_path(divergence):
    """Both paths reduce the same bf16 logits over positions in float32, so under autocast their MI values
    agree to float32 rounding (the unchunked path used to round its position average to bf16)."""
    inputs = make_inputs(seed=12, empty_rows=False)
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = inputs
    mi = dict(variant="masked", reduction="mean", divergence=divergence)
    results = []
    for function in (unchunked, chunked):
        hidden = rationale_hidden.clone().requires_grad_(True)
        extra = dict(chunk_size=4) if function is chunked else {}
        with torch.autocast("cpu", dtype=torch.bfloat16):
            *_, mi_loss = function(
                weight, label_hidden, label_labels, hidden, rationale_labels, **mi, **extra
            )
        (grad,) = torch.autograd.grad(mi_loss, [hidden])
        results.append((mi_loss, grad))
    (ref, ref_grad), (ours, ours_grad) = results
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours_grad, ref_grad, atol=1e-6, rtol=1e-3)


@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("variant", ["paper", "masked"])
def test_a_batch_without_any_target_gives_finite_sums_and_gradients(variant, reduction):
    """Every label and rationale target is -100 (a micro-batch of padding): zero sums, no NaN anywhere."""
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = make_inputs(seed=21)
    inputs = (weight, label_hidden, label_labels.fill_(-100), rationale_hidden, rationale_labels.fill_(-100))
    mi = dict(variant=variant, reduction=reduction, divergence="kl")
    expected, expected_grads = values_and_grads(unchunked, inputs, **mi)
    got, got_grads = values_and_grads(chunked, inputs, chunk_size=5, **mi)
    assert got[0].item() == got[1].item() == 0.0
    for a, b in zip(got + list(got_grads), expected + list(expected_grads)):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    if variant == "masked":  # no valid row: the MI term is 0 and sends no gradient
        assert got[2].item() == 0.0 and got_grads[2].abs().max() == 0


def test_non_contiguous_hidden_states_and_weight_give_the_unchunked_result():
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = make_inputs(seed=22)
    # the same values, stored transposed: [n, B, d] viewed as [B, n, d], and [d, V] viewed as [V, d]
    views = (
        weight.t().contiguous().t(),
        label_hidden.transpose(0, 1).contiguous().transpose(0, 1),
        label_labels,
        rationale_hidden.transpose(0, 1).contiguous().transpose(0, 1),
        rationale_labels,
    )
    assert not any(views[i].is_contiguous() for i in (0, 1, 3))
    mi = dict(variant="masked", reduction="max", divergence="ce")
    got, got_grads = values_and_grads(chunked, views, chunk_size=7, **mi)
    expected, expected_grads = values_and_grads(unchunked, make_inputs(seed=22), **mi)
    for a, b in zip(got + list(got_grads), expected + list(expected_grads)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_hidden_states_without_autocast_keep_their_dtype(dtype):
    """Low-precision hidden states and a float32 head: float32 sums, a float32 weight gradient and hidden
    gradients in the hidden dtype, the float32 reference rounded once (no float64 anywhere)."""
    weight, label_hidden, label_labels, rationale_hidden, rationale_labels = make_inputs(seed=23)
    label_hidden, rationale_hidden = label_hidden.to(dtype), rationale_hidden.to(dtype)
    low = (weight, label_hidden, label_labels, rationale_hidden, rationale_labels)
    got, got_grads = values_and_grads(chunked, low, chunk_size=4, variant="masked")
    upcast = (weight, label_hidden.float(), label_labels, rationale_hidden.float(), rationale_labels)
    expected, expected_grads = values_and_grads(unchunked, upcast, variant="masked")
    assert [t.dtype for t in got] == [torch.float32] * 3
    assert [g.dtype for g in got_grads] == [torch.float32, dtype, dtype]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_grads[0], expected_grads[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(got_grads[1:], expected_grads[1:]):
        torch.testing.assert_close(a, b.to(dtype))  # the dtype's default tolerance: one rounding
