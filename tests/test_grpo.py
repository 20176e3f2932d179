"""GRPO maths against numbers worked out by hand (in the comments), not by re-running formulas."""

from __future__ import annotations

import math

import pytest
import torch

from services.learner.grpo import group_advantages, masked_aggregate, policy_loss

AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def close(actual, expected, tol=1e-5):
    expected = torch.as_tensor(expected, dtype=torch.float32)
    torch.testing.assert_close(torch.as_tensor(actual).float(), expected, atol=tol, rtol=0)


# --- advantages ----------------------------------------------------------------------------

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])


def test_advantages_scaled_by_unbiased_std():
    # Row 0: mean 0.5, deviations +-0.5, var = 4 * 0.25 / 3 = 1/3, std = 0.57735 -> +-0.866025.
    # Row 1: mean 0.25, deviations (-.25, -.25, -.25, .75), var = (3 * .0625 + .5625) / 3 = .25,
    #        std = 0.5 -> (-0.5, -0.5, -0.5, 1.5).
    adv = group_advantages(REWARDS, eps=0.0)
    close(adv, [[0.866025, -0.866025, -0.866025, 0.866025], [-0.5, -0.5, -0.5, 1.5]])
    # Default eps=1e-4 is added to the std: 0.5 / (0.577350 + 0.0001) = 0.865876.
    adv = group_advantages(REWARDS)
    close(adv[0], [0.865876, -0.865876, -0.865876, 0.865876])
    close(adv[1], [-0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, 0.75 / 0.5001])
    assert adv.shape == REWARDS.shape


def test_advantages_unscaled_dr_grpo():
    adv = group_advantages(REWARDS, scale=False)
    close(adv, [[0.5, -0.5, -0.5, 0.5], [-0.25, -0.25, -0.25, 0.75]])


def test_advantages_degenerate_groups():
    # All-equal group: std 0, the eps keeps it finite -> zeros.
    close(group_advantages(torch.tensor([[1.0, 1.0, 1.0]])), [[0.0, 0.0, 0.0]])
    # G=1: torch's unbiased std would be nan; we treat it as 0 -> advantage 0, never nan.
    for scale in (True, False):
        adv = group_advantages(torch.tensor([[3.0], [-2.0]]), scale=scale)
        close(adv, [[0.0], [0.0]])
    # Integer rewards are accepted (promoted to float).
    close(group_advantages(torch.tensor([[0, 2]]), scale=False), [[-1.0, 1.0]])
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4))


# --- policy loss: aggregation at ratio 1 ---------------------------------------------------

MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
ADV = torch.tensor([2.0, -1.0])


@pytest.mark.parametrize(
    "agg, max_tokens, expected",
    [
        # per-token pg = -A: row 0 has 3 tokens of -2, row 1 has 1 token of +1.
        ("token_mean", None, (-6 + 1) / 4),  # -1.25
        ("seq_mean_token_mean", None, (-2 + 1) / 2),  # -0.5
        ("seq_mean_token_sum_norm", None, (-6 / 4 + 1 / 4) / 2),  # max_tokens defaults to T=4
        ("seq_mean_token_sum_norm", 8, (-6 / 8 + 1 / 8) / 2),  # -0.3125
    ],
)
def test_loss_at_ratio_one(agg, max_tokens, expected):
    logp = torch.full((2, 4), -1.3)
    loss, m = policy_loss(logp, logp.clone(), ADV, MASK, agg=agg, max_tokens=max_tokens)
    close(loss, expected)
    assert m["loss/policy"] == pytest.approx(expected, abs=1e-6)
    assert m["loss/kl"] == 0.0
    assert m["loss/clip_frac"] == 0.0
    assert m["loss/ratio_mean"] == pytest.approx(1.0)
    assert all(type(v) is float for v in m.values())


def test_aggregations_differ_and_float_mask_matches_bool():
    logp = torch.zeros(2, 4)
    losses = [float(policy_loss(logp, logp, ADV, MASK, agg=a)[0]) for a in AGGS]
    assert len(set(losses)) == 3
    for a in AGGS:
        close(
            policy_loss(logp, logp, ADV, MASK.float(), agg=a)[0],
            policy_loss(logp, logp, ADV, MASK, agg=a)[0],
        )


# --- clipping ------------------------------------------------------------------------------

# Row 0: A=+1, ratios (1.5, 1.0). Row 1: A=-1, ratios (0.5, 1.5).
CLIP_LOGP = torch.log(torch.tensor([[1.5, 1.0], [0.5, 1.5]]))
CLIP_OLD = torch.zeros(2, 2)
CLIP_ADV = torch.tensor([1.0, -1.0])
CLIP_MASK = torch.ones(2, 2)


def test_clipping_symmetric():
    # (0,0): min(1.5, 1.2) = 1.2 -> pg -1.2 (clipped)   (0,1): ratio 1 -> pg -1.0
    # (1,0): min(-0.5, -0.8) = -0.8 -> pg 0.8 (clipped) (1,1): min(-1.5, -1.2) = -1.5 -> 1.5
    # token mean = (-1.2 - 1.0 + 0.8 + 1.5) / 4 = 0.025; 2 of 4 tokens clipped.
    logp = CLIP_LOGP.clone().requires_grad_(True)
    loss, m = policy_loss(logp, CLIP_OLD, CLIP_ADV, CLIP_MASK)
    close(loss, 0.025)
    assert m["loss/clip_frac"] == pytest.approx(0.5)
    assert m["loss/ratio_mean"] == pytest.approx((1.5 + 1.0 + 0.5 + 1.5) / 4)
    loss.backward()
    # Clipped tokens get no gradient. Unclipped: d(-ratio*A)/dlogp = -ratio*A, over 4 tokens:
    # (0,1): -1.0 * 1 / 4 = -0.25; (1,1): -1.5 * -1 / 4 = 0.375.
    close(logp.grad, [[0.0, -0.25], [0.0, 0.375]])


def test_clip_higher_differs_from_symmetric():
    # eps_high=0.28: (0,0) is clipped at 1.28 instead of 1.2 -> pg -1.28; the rest unchanged.
    # (-1.28 - 1.0 + 0.8 + 1.5) / 4 = 0.005; ratio 1.5 is still above 1.28 -> clip_frac 0.5.
    loss, m = policy_loss(CLIP_LOGP, CLIP_OLD, CLIP_ADV, CLIP_MASK, eps_high=0.28)
    close(loss, 0.005)
    assert m["loss/clip_frac"] == pytest.approx(0.5)
    sym, _ = policy_loss(CLIP_LOGP, CLIP_OLD, CLIP_ADV, CLIP_MASK)
    assert float(sym) != pytest.approx(float(loss))
    # eps_low only affects the negative-advantage side: 0.5 is inside [0.4, 1.2] -> (1,0) is
    # unclipped, pg = 0.5; loss = (-1.2 - 1.0 + 0.5 + 1.5) / 4 = -0.05; one token clipped.
    loss, m = policy_loss(CLIP_LOGP, CLIP_OLD, CLIP_ADV, CLIP_MASK, eps_low=0.6)
    close(loss, -0.05)
    assert m["loss/clip_frac"] == pytest.approx(0.25)


# --- KL (k3) -------------------------------------------------------------------------------


def test_k3_kl_value():
    # ratio 1 and A = 0 -> pg = 0. ref - logp = (ln 2, -ln 2, 0):
    # k3 = (2 - ln2 - 1, 0.5 + ln2 - 1, 0) = (0.306853, 0.193147, 0); sum 0.5, mean 1/6.
    ln2 = math.log(2.0)
    logp = torch.zeros(1, 3, requires_grad=True)
    ref = torch.tensor([[ln2, -ln2, 0.0]])
    kwargs = dict(ref_logprobs=ref, beta=0.1)
    loss, m = policy_loss(logp, torch.zeros(1, 3), torch.zeros(1), torch.ones(1, 3), **kwargs)
    assert m["loss/kl"] == pytest.approx(1 / 6, abs=1e-6)
    assert m["loss/policy"] == pytest.approx(0.0, abs=1e-7)
    close(loss, 0.1 / 6)
    loss.backward()
    # d k3 / d logp = 1 - exp(ref - logp) = (-1, 0.5, 0); times beta / 3 tokens.
    close(logp.grad, [[-0.1 / 3, 0.05 / 3, 0.0]])
    # Same KL aggregated per sequence with Dr. GRPO norm 6: 0.5 / 6.
    _, m = policy_loss(
        logp,
        logp,
        torch.zeros(1),
        torch.ones(1, 3),
        agg="seq_mean_token_sum_norm",
        max_tokens=6,
        **kwargs,
    )
    assert m["loss/kl"] == pytest.approx(0.5 / 6, abs=1e-6)
    # beta 0 (or no reference) -> no KL term at all.
    _, m = policy_loss(logp, logp, torch.zeros(1), torch.ones(1, 3), ref_logprobs=ref, beta=0.0)
    assert m["loss/kl"] == 0.0


# --- gradients, masking, errors ------------------------------------------------------------


def test_gradient_descent_raises_logprobs_of_positive_advantage():
    logp = torch.full((2, 3), -2.0, requires_grad=True)
    loss, _ = policy_loss(logp, logp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 3))
    loss.backward()
    assert (logp.grad[0] < 0).all()  # descent (logp -= lr * grad) increases these logprobs
    assert (logp.grad[1] > 0).all()  # and decreases those of the negative-advantage row
    with torch.no_grad():
        stepped = logp - 0.1 * logp.grad
    assert (stepped[0] > logp[0]).all() and (stepped[1] < logp[1]).all()


def test_masked_tokens_get_zero_gradient_even_with_garbage():
    logp = torch.tensor([[-1.0, -1.0, -float("inf")], [-1.0, 50.0, 50.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.0, 0.0], [-1.0, -float("inf"), 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    for agg in AGGS:
        logp.grad = None
        loss, m = policy_loss(
            logp,
            old,
            torch.tensor([1.0, 1.0]),
            mask,
            agg=agg,
            ref_logprobs=torch.zeros(2, 3),
            beta=0.5,
        )
        loss.backward()
        assert torch.isfinite(loss) and all(math.isfinite(v) for v in m.values())
        assert logp.grad[0, 2] == 0 and logp.grad[1, 1] == 0 and logp.grad[1, 2] == 0
        assert (logp.grad[mask.bool()] != 0).all()


def test_empty_mask_gives_zero_not_nan():
    z = torch.zeros(2, 3)
    for agg in AGGS:
        loss, m = policy_loss(z, z, torch.ones(2), torch.zeros(2, 3), agg=agg)
        assert float(loss) == 0.0 and m["loss/clip_frac"] == 0.0


def test_bad_arguments_raise():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="aggregation"):
        policy_loss(z, z, torch.ones(2), torch.ones(2, 3), agg="sum")
    with pytest.raises(ValueError, match="aggregation"):
        masked_aggregate(z, torch.ones(2, 3), "mean")
    with pytest.raises(ValueError):
        policy_loss(z, z, torch.ones(3), torch.ones(2, 3))
    with pytest.raises(ValueError):
        policy_loss(z, z[:, :2], torch.ones(2), torch.ones(2, 3))
    with pytest.raises(ValueError):
        masked_aggregate(z, torch.ones(2, 3), "seq_mean_token_sum_norm", max_tokens=0)


# --- truncated importance sampling ---------------------------------------------------------

def test_tis_weights_by_hand():
    from services.learner.grpo import tis_weights

    learner = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, 0.0]])
    sampler = torch.tensor([[-1.5, -1.0, -0.5], [-1.0, -2.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    w, m = tis_weights(learner, sampler, mask, cap=2.0)
    # exp(0.5)=1.6487, exp(-1)=0.3679, exp(0)=1, exp(-2)=0.1353, exp(1)=2.718 -> capped at 2
    want = torch.tensor([[math.exp(0.5), math.exp(-1.0), 1.0], [math.exp(-2.0), 2.0, 0.0]])
    torch.testing.assert_close(w, want)
    assert m["off_policy/is_weight_mean"] == pytest.approx(float(want.sum()) / 5)
    assert m["off_policy/clipped_frac"] == pytest.approx(1 / 5)
    assert not w.requires_grad


def test_tis_scales_each_token_and_off_is_todays_loss():
    from services.learner.grpo import policy_loss

    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    mask = torch.ones(2, 2)
    adv = torch.tensor([1.0, -2.0])
    w = torch.tensor([[0.5, 2.0], [1.0, 0.25]])
    plain, _ = policy_loss(logp, logp.detach(), adv, mask)
    same, _ = policy_loss(logp, logp.detach(), adv, mask, is_weights=None)
    assert float(plain) == float(same)
    weighted, _ = policy_loss(logp, logp.detach(), adv, mask, is_weights=w)
    # ratio 1: per-token pg = -A; weighted token mean = -(0.5*1 + 2*1 + 1*-2 + 0.25*-2) / 4
    assert float(weighted) == pytest.approx(-(0.5 + 2.0 - 2.0 - 0.5) / 4)
    (g,) = torch.autograd.grad(weighted, logp)
    # d/dlogp of -w * ratio * A at ratio 1 is -w * A, over 4 tokens
    torch.testing.assert_close(g, -(w * adv.unsqueeze(1)) / 4)
