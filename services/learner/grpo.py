"""GRPO maths in pure torch: group advantages and the clipped policy loss.

No model, vLLM or Ray here, so the numbers can be checked by hand (see tests/test_grpo.py).

Shapes: ``B`` sequences (completions), ``T`` completion tokens (right-padded), ``G`` completions
per prompt.

Advantages, per group (row) ``r`` of ``rewards [num_groups, G]``::

    A = (r - mean(r)) / (std(r) + eps)   scale=True  (GRPO; unbiased std, correction=1)
    A =  r - mean(r)                      scale=False (Dr. GRPO)

Policy loss, per token ``t`` of sequence ``i`` (``A_i`` broadcast over the tokens)::

    ratio = exp(logp - old_logp)
    pg    = -min(ratio * A_i, clamp(ratio, 1 - eps_low, 1 + eps_high) * A_i)
    kl    = exp(ref - logp) - (ref - logp) - 1          (k3 estimator, >= 0)
    loss  = aggregate(pg + beta * kl)

Aggregations over ``mask [B, T]`` (``values * mask`` below)::

    token_mean               sum_{i,t} v / sum_{i,t} mask               (DAPO)
    seq_mean_token_mean      mean_i( sum_t v / sum_t mask )             (GRPO)
    seq_mean_token_sum_norm  mean_i( sum_t v / max_tokens )             (Dr. GRPO)

Truncated importance sampling (TIS) corrects for the sampler having scored another policy
than the learner (vLLM's bf16 base vs a 4-bit learner, or a stale adapter). Per token::

    w  = min(exp(learner_logp - sampler_logp), C)    (constant: no gradient through w)
    pg = w * pg

``max_tokens`` defaults to ``T`` (``mask.shape[1]``); pass the configured max completion
length to keep Dr. GRPO's divisor constant across batches. ``mask`` is 0/1 (bool or float).

Sequence means run over all ``B`` rows (an all-masked row contributes 0), so the loss scale
depends only on the batch size, not on which rows happen to be empty.
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def group_advantages(
    rewards: torch.Tensor, *, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """Group-relative advantages of ``rewards [num_groups, G]``; same shape, float dtype.

    With ``G == 1`` torch's unbiased std is nan (0 / 0); we treat it as 0 instead, so a lone
    sample gets advantage 0 (it has nothing to be compared with) rather than nan.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [num_groups, G], got shape {tuple(rewards.shape)}")
    r = rewards if rewards.is_floating_point() else rewards.float()
    centered = r - r.mean(dim=1, keepdim=True)
    if not scale:
        return centered
    if r.shape[1] < 2:
        std = torch.zeros_like(centered[:, :1])
    else:
        std = r.std(dim=1, keepdim=True)  # unbiased (correction=1), as in the GRPO paper
    return centered / (std + eps)


def tis_weights(
    learner_logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    cap: float = 2.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated importance weights ``min(exp(learner - sampler), cap)`` per token, ``[B, T]``,
    detached, 0 where ``mask`` is off; metrics ``off_policy/is_weight_mean`` (token mean of the
    truncated weight) and ``off_policy/clipped_frac`` (share of tokens whose weight hit the cap).
    """
    if learner_logprobs.shape != sampler_logprobs.shape or mask.shape != learner_logprobs.shape:
        raise ValueError("learner_logprobs, sampler_logprobs and mask must share one [B, T] shape")
    if cap < 1.0:
        raise ValueError(f"cap must be >= 1, got {cap}")
    on = mask.bool()
    with torch.no_grad():
        zero = torch.zeros((), dtype=torch.float32, device=learner_logprobs.device)
        log_w = torch.where(on, learner_logprobs.float() - sampler_logprobs.float(), zero)
        raw = torch.exp(log_w)
        w = torch.where(on, torch.clamp(raw, max=cap), zero)
        metrics = {
            "off_policy/is_weight_mean": float(masked_aggregate(w, on, "token_mean")),
            "off_policy/clipped_frac": float(masked_aggregate((raw > cap).float(), on,
                                                              "token_mean")),
        }
    return w, metrics


def masked_aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    agg: str = "token_mean",
    max_tokens: int | None = None,
) -> torch.Tensor:
    """Reduce per-token ``values [B, T]`` over the tokens where ``mask`` is set to a scalar.

    ``max_tokens`` is the Dr. GRPO constant divisor for ``seq_mean_token_sum_norm``; it defaults
    to ``T`` (``mask.shape[1]``). Pass the configured max completion length instead to keep the
    loss scale fixed across batches whose padding differs. Empty masks give 0, not nan.
    """
    m = mask.to(values.dtype)
    summed = values * m
    if agg == "token_mean":
        return summed.sum() / m.sum().clamp(min=1.0)
    n_seq = max(values.shape[0], 1)
    if agg == "seq_mean_token_mean":
        per_seq = summed.sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0)
        return per_seq.sum() / n_seq
    if agg == "seq_mean_token_sum_norm":
        norm = mask.shape[-1] if max_tokens is None else max_tokens
        if norm <= 0:
            raise ValueError(f"max_tokens must be positive, got {norm}")
        return (summed.sum(dim=-1) / norm).sum() / n_seq
    raise ValueError(f"unknown loss aggregation {agg!r}; expected one of {AGGREGATIONS}")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    agg: str = "token_mean",
    max_tokens: int | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped GRPO/DAPO surrogate loss (to minimise) and float metrics.

    ``logprobs`` carries the gradient; ``old_logprobs`` and ``ref_logprobs`` are constants
    (detached). ``is_weights [B, T]`` (from ``tis_weights``) scale each token's policy term;
    None leaves the loss exactly uncorrected. Maths runs in float32 whatever the input dtype.
    The KL term is added only when ``beta > 0`` and ``ref_logprobs`` is given; otherwise
    ``loss/kl`` is 0.0.

    Metrics: ``loss/policy`` and ``loss/kl`` (each aggregated with ``agg``), ``loss/clip_frac``
    (share of masked tokens where the clipped branch is the active one, i.e. zero-gradient:
    ``A > 0 and ratio > 1 + eps_high`` or ``A < 0 and ratio < 1 - eps_low``) and
    ``loss/ratio_mean`` (token mean of the ratio over masked tokens).
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {agg!r}; expected one of {AGGREGATIONS}")
    shape = logprobs.shape
    if logprobs.dim() != 2 or old_logprobs.shape != shape or mask.shape != shape:
        raise ValueError(
            f"logprobs, old_logprobs and mask must share one [B, T] shape; got "
            f"{tuple(shape)}, {tuple(old_logprobs.shape)}, {tuple(mask.shape)}"
        )
    if advantages.shape != shape[:1]:
        raise ValueError(f"advantages must be [B]={shape[0]}, got {tuple(advantages.shape)}")
    use_kl = beta > 0 and ref_logprobs is not None
    if use_kl and ref_logprobs.shape != shape:
        raise ValueError(f"ref_logprobs must be {tuple(shape)}, got {tuple(ref_logprobs.shape)}")

    on = mask.bool()
    logp = logprobs.float()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    # torch.where (not multiply-by-mask) on the exponent: padded positions may hold garbage or
    # -inf log-probs, and exp() of those must not turn into nan/inf in the loss or its gradient.
    log_ratio = torch.where(on, logp - old_logprobs.detach().float(), zero)
    ratio = torch.exp(log_ratio)
    adv = advantages.detach().float().unsqueeze(-1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    pg = -torch.minimum(unclipped, clipped)
    if is_weights is not None:
        if is_weights.shape != shape:
            raise ValueError(f"is_weights must be {tuple(shape)}, got {tuple(is_weights.shape)}")
        pg = pg * is_weights.detach().float()
    pg_loss = masked_aggregate(pg, on, agg, max_tokens)

    if use_kl:
        delta = torch.where(on, ref_logprobs.detach().float() - logp, zero)
        kl = torch.exp(delta) - delta - 1.0
        kl_loss = masked_aggregate(kl, on, agg, max_tokens)
        loss = pg_loss + beta * kl_loss
    else:
        kl_loss = zero
        loss = pg_loss

    with torch.no_grad():
        is_clipped = ((adv > 0) & (ratio > 1.0 + eps_high)) | ((adv < 0) & (ratio < 1.0 - eps_low))
        metrics = {
            "loss/policy": float(pg_loss.detach()),
            "loss/kl": float(kl_loss.detach()),
            "loss/clip_frac": float(masked_aggregate(is_clipped.float(), on, "token_mean")),
            "loss/ratio_mean": float(masked_aggregate(ratio, on, "token_mean")),
        }
    return loss, metrics
