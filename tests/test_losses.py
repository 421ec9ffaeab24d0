"""The MI loss against a naive reference written from the formulas in shared/notes/mi-loss.md."""

from __future__ import annotations

import itertools

import pytest
import torch

import hf_cotmi.losses as losses
from hf_cotmi import mutual_information_loss


def naive_mi(z, r, label_mask, rationale_mask, reduction, divergence, variant):
    """Materialise both softmaxes, reduce over positions, then use torch's own loss modules."""
    probs_label = torch.softmax(z, dim=-1).detach()
    probs_rationale = torch.softmax(r, dim=-1)

    def reduce(probs, mask):
        if variant == "paper" or mask is None:
            return probs.max(dim=1).values if reduction == "max" else probs.mean(dim=1)
        m = mask[:, :, None]
        if reduction == "max":
            return probs.masked_fill(~m, float("-inf")).max(dim=1).values
        return (probs * m).sum(dim=1) / m.sum(dim=1)

    p = reduce(probs_label, label_mask)
    q = reduce(probs_rationale, rationale_mask)
    if variant == "paper" and divergence == "ce":
        return torch.nn.CrossEntropyLoss()(q, p)
    p_norm = p / p.sum(dim=1, keepdim=True)
    log_q_norm = torch.log(q / q.sum(dim=1, keepdim=True))
    if divergence == "ce":
        # log_softmax(log q_norm) == log q_norm, so CrossEntropyLoss with a probability target is the CE.
        return torch.nn.CrossEntropyLoss()(log_q_norm, p_norm)
    return torch.nn.KLDivLoss(reduction="batchmean")(log_q_norm, p_norm)


def make_inputs(seed=0, batch=3, m=4, n=6, vocab=11, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, m, vocab, generator=g) * scale
    r = torch.randn(batch, n, vocab, generator=g) * scale
    label_mask = torch.ones(batch, m, dtype=torch.bool)
    rationale_mask = torch.ones(batch, n, dtype=torch.bool)
    # padded positions at the end of some rows
    label_mask[0, 2:] = False
    label_mask[2, 3:] = False
    rationale_mask[1, 4:] = False
    rationale_mask[2, 1:] = False
    return z, r, label_mask, rationale_mask


OPTIONS = list(itertools.product(["max", "mean"], ["ce", "kl"], ["paper", "masked"]))


@pytest.mark.parametrize("reduction,divergence,variant", OPTIONS)
@pytest.mark.parametrize("log_probs_path", [False, True])
def test_value_and_gradient_match_naive_reference(reduction, divergence, variant, log_probs_path):
    z, r, lmask, rmask = make_inputs()
    r_ours = r.clone().requires_grad_(True)
    r_ref = r.clone().requires_grad_(True)
    z_ours = z.clone().requires_grad_(True)

    if log_probs_path:
        ours = mutual_information_loss(
            torch.log_softmax(z_ours, -1),
            torch.log_softmax(r_ours, -1),
            label_mask=lmask,
            rationale_mask=rmask,
            reduction=reduction,
            divergence=divergence,
            variant=variant,
            inputs_are_log_probs=True,
        )
    else:
        ours = mutual_information_loss(
            z_ours,
            r_ours,
            label_mask=lmask,
            rationale_mask=rmask,
            reduction=reduction,
            divergence=divergence,
            variant=variant,
        )
    ref = naive_mi(z, r_ref, lmask, rmask, reduction, divergence, variant)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)

    ours.backward()
    ref.backward()
    torch.testing.assert_close(r_ours.grad, r_ref.grad, atol=1e-6, rtol=1e-5)
    assert z_ours.grad is None or torch.count_nonzero(z_ours.grad) == 0, "the label side must get no gradient"


@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("variant", ["paper", "masked"])
def test_chunked_path_matches_reference(monkeypatch, reduction, variant):
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 7)  # forces many vocabulary and position chunks
    z, r, lmask, rmask = make_inputs(seed=3, n=9, vocab=13)
    r1 = r.clone().requires_grad_(True)
    r2 = r.clone().requires_grad_(True)
    ours = mutual_information_loss(
        z, r1, label_mask=lmask, rationale_mask=rmask, reduction=reduction, variant=variant
    )
    ref = naive_mi(z, r2, lmask, rmask, reduction, "ce", variant)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(r1.grad, r2.grad, atol=1e-6, rtol=1e-5)


def test_paper_variant_ignores_masks_and_equals_released_formula():
    z, r, lmask, rmask = make_inputs(seed=1)
    with_masks = mutual_information_loss(z, r, label_mask=lmask, rationale_mask=rmask)
    without = mutual_information_loss(z, r)
    assert with_masks.item() == without.item()
    # the released code: CrossEntropyLoss(input=max_t softmax(R), target=max_t softmax(Z)).
    p = torch.softmax(z, -1).max(1).values
    q = torch.softmax(r, -1).max(1).values
    manual = -(p * torch.log_softmax(q, -1)).sum(-1).mean()
    torch.testing.assert_close(without, manual, atol=1e-6, rtol=1e-6)


def test_max_gradient_reaches_only_the_arg_max_position_on_log_probs_path():
    z, r, _, _ = make_inputs(seed=2)
    logp = torch.log_softmax(r, -1).detach().requires_grad_(True)
    mutual_information_loss(z, logp, inputs_are_log_probs=True).backward()
    arg = logp.detach().max(dim=1).indices  # [B, V]
    nonzero = logp.grad != 0
    assert nonzero.sum(dim=1).le(1).all()
    expected_position = torch.zeros_like(nonzero)
    expected_position.scatter_(1, arg[:, None, :], True)
    assert not (nonzero & ~expected_position).any()


def test_masked_variant_gives_zero_for_rows_without_valid_positions():
    z, r, lmask, rmask = make_inputs(seed=4)
    rmask[0] = False
    r = r.requires_grad_(True)
    loss = mutual_information_loss(z, r, label_mask=lmask, rationale_mask=rmask, variant="masked")
    keep = torch.tensor([False, True, True])
    ref = naive_mi(z[keep], r[keep], lmask[keep], rmask[keep], "max", "ce", "masked") * 2 / 3
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-6)
    loss.backward()
    assert torch.isfinite(r.grad).all()
    assert torch.count_nonzero(r.grad[0]) == 0


@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("log_probs_path", [False, True])
def test_no_batch_by_positions_by_vocab_tensor_is_saved_for_backward(reduction, log_probs_path):
    batch, n, vocab = 2, 16, 50
    z = torch.randn(batch, 3, vocab)
    r = torch.randn(batch, n, vocab, requires_grad=True)
    x = torch.log_softmax(r, -1) if log_probs_path else r
    x_ptr = x.data_ptr()
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        mutual_information_loss(z, x, reduction=reduction, inputs_are_log_probs=log_probs_path)
    big = [t for t in saved if t.numel() >= batch * n * vocab]
    # The only large saved tensor is the input itself (a reference, no copy).
    assert all(t.data_ptr() == x_ptr for t in big), [tuple(t.shape) for t in big]


def test_bfloat16_inputs_are_supported():
    z, r, _, _ = make_inputs(seed=5)
    r16 = r.to(torch.bfloat16).requires_grad_(True)
    loss16 = mutual_information_loss(z.to(torch.bfloat16), r16)
    loss32 = mutual_information_loss(z.to(torch.bfloat16).float(), r.to(torch.bfloat16).float())
    torch.testing.assert_close(loss16, loss32, atol=1e-3, rtol=1e-3)
    loss16.backward()
    assert r16.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("top", [3.0, 6.0, 9.0])
@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("variant", ["paper", "masked"])
def test_bfloat16_gradient_is_the_reference_rounded_once(top, reduction, variant):
    """A rationale position sure of one token (its softmax close to 1): the two gradient terms nearly cancel,
    so they must be added in float32 and rounded to bfloat16 once."""
    z = torch.tensor([[[4.0, 0.0]]])
    r = torch.tensor([[[top, 0.0]]])
    r16 = r.to(torch.bfloat16).requires_grad_(True)
    kwargs = dict(reduction=reduction, divergence="ce", variant=variant)
    mutual_information_loss(z.to(torch.bfloat16), r16, **kwargs).backward()
    r64 = r.to(torch.bfloat16).double().requires_grad_(True)
    naive_mi(z.to(torch.bfloat16).double(), r64, None, None, reduction, "ce", variant).backward()
    expected = r64.grad.to(torch.bfloat16).float()
    got = r16.grad.float()
    ulp = expected.abs().max() * 2**-7  # one bfloat16 unit in the last place of the largest entry
    assert torch.allclose(got, expected, atol=float(ulp), rtol=0), (got, expected)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"reduction": "sum"}, "reduction"),
        ({"divergence": "js"}, "divergence"),
        ({"variant": "fixed"}, "variant"),
        ({"label_mask": torch.ones(3, 5, dtype=torch.bool)}, "label_mask"),
        ({"rationale_mask": torch.ones(3, 6)}, "rationale_mask"),
    ],
)
def test_bad_options_raise_value_error_naming_the_argument(kwargs, match):
    z, r, _, _ = make_inputs()
    with pytest.raises(ValueError, match=match):
        mutual_information_loss(z, r, **kwargs)


def test_bad_shapes_raise_value_error_naming_the_argument():
    z, r, _, _ = make_inputs()
    with pytest.raises(ValueError, match="label_logits"):
        mutual_information_loss(z[0], r)
    with pytest.raises(ValueError, match="rationale_logits.*batch size"):
        mutual_information_loss(z, r[:2])
    with pytest.raises(ValueError, match="rationale_logits.*vocabulary"):
        mutual_information_loss(z, r[:, :, :5])


@pytest.mark.parametrize("reduction,divergence,variant", OPTIONS)
def test_fused_rationale_nll_and_mi_equal_the_separate_terms(reduction, divergence, variant):
    from hf_cotmi.losses import rationale_nll_and_mutual_information

    z, r, lmask, rmask = make_inputs(seed=6)
    targets = torch.randint(0, r.shape[-1], rmask.shape, generator=torch.Generator().manual_seed(0))
    targets = targets.masked_fill(~rmask, -100)
    r1 = r.clone().requires_grad_(True)
    r2 = r.clone().requires_grad_(True)
    nll, mi = rationale_nll_and_mutual_information(
        torch.log_softmax(r1, -1),
        targets,
        z,
        label_mask=lmask,
        reduction=reduction,
        divergence=divergence,
        variant=variant,
    )
    # independent reference: torch's nll over a materialised log-softmax plus the naive MI
    ref_nll = torch.nn.functional.nll_loss(
        torch.log_softmax(r2, -1).flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
    )
    ref_mi = naive_mi(z, r2, lmask, rmask, reduction, divergence, variant)
    torch.testing.assert_close(nll, ref_nll, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(mi, ref_mi, atol=1e-6, rtol=1e-6)
    (0.7 * nll + 0.3 * mi).backward()
    (0.7 * ref_nll + 0.3 * ref_mi).backward()
    torch.testing.assert_close(r1.grad, r2.grad, atol=1e-6, rtol=1e-5)


def test_fused_path_saves_only_the_log_probs_it_was_given():
    from hf_cotmi.losses import rationale_nll_and_mutual_information

    batch, n, vocab = 2, 16, 50
    z = torch.randn(batch, 3, vocab)
    r = torch.randn(batch, n, vocab, requires_grad=True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        logp = torch.log_softmax(r, -1)
        rationale_nll_and_mutual_information(logp, torch.zeros(batch, n, dtype=torch.long), z)
    big = [t for t in saved if t.numel() >= batch * n * vocab]
    assert big and all(t.data_ptr() == logp.data_ptr() for t in big)


@pytest.mark.parametrize("divergence", ["ce", "kl"])
@pytest.mark.parametrize("variant", ["paper", "masked"])
@pytest.mark.parametrize("fused", [False, True])
def test_mean_reduction_under_bf16_autocast_is_computed_in_float32(divergence, variant, fused):
    """The trainer computes the loss inside autocast (``bf16=True``). The float32 logits must be averaged over
    positions in float32: an average rounded to bfloat16 moves ``q`` by ~0.4%, which is several percent of
    the gradient when ``q`` is close to ``p`` (the KL near its minimum)."""
    from hf_cotmi.losses import rationale_nll_and_mutual_information

    z, _, lmask, rmask = make_inputs(seed=7, m=6, n=6, vocab=30, scale=2.0)
    rmask = lmask.clone()
    r = z + 0.05 * torch.randn(z.shape, generator=torch.Generator().manual_seed(8))  # q close to p
    r64 = r.double().requires_grad_(True)
    ref = naive_mi(z.double(), r64, lmask, rmask, "mean", divergence, variant)
    ref.backward()

    ours_r = r.clone().requires_grad_(True)
    kwargs = dict(reduction="mean", divergence=divergence, variant=variant)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if fused:
            targets = torch.zeros(rmask.shape, dtype=torch.long).masked_fill(~rmask, -100)
            log_probs = torch.log_softmax(ours_r, -1, dtype=torch.float32)
            _, ours = rationale_nll_and_mutual_information(log_probs, targets, z, label_mask=lmask, **kwargs)
        else:
            ours = mutual_information_loss(z, ours_r, label_mask=lmask, rationale_mask=rmask, **kwargs)
    ours.backward()
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours_r.grad.double(), r64.grad, atol=1e-7, rtol=1e-4)


def test_fused_nll_skips_padding_positions_whose_log_probs_are_minus_inf():
    """Padding targets are read at token 0; a -inf log-probability there (a token the model rules out, an
    fp16 logit that overflowed) must be skipped as ``F.nll_loss(ignore_index=-100)`` skips it, not turn
    ``-inf * 0`` into NaN."""
    from hf_cotmi.losses import rationale_nll_and_mutual_information

    z, r, lmask, rmask = make_inputs(seed=9)
    r[..., 0] = float("-inf")  # token 0 is never predicted
    targets = torch.randint(1, r.shape[-1], rmask.shape, generator=torch.Generator().manual_seed(1))
    targets = targets.masked_fill(~rmask, -100)
    r1 = r.clone().requires_grad_(True)
    r2 = r.clone().requires_grad_(True)
    nll, mi = rationale_nll_and_mutual_information(torch.log_softmax(r1, -1), targets, z, label_mask=lmask)
    ref = torch.stack(
        [-torch.log_softmax(r2[b, t], -1)[targets[b, t]] for b, t in rmask.nonzero().tolist()]
    ).sum()
    torch.testing.assert_close(nll, ref, atol=1e-5, rtol=1e-6)
    assert torch.isfinite(mi)
    nll.backward()
    ref.backward()
    torch.testing.assert_close(r1.grad, r2.grad, atol=1e-6, rtol=1e-5)
