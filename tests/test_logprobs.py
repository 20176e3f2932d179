"""Chunked log-probs from hidden states equal the full-logits computation, values and LoRA
gradients (fp32), at temperature 1 and not 1, with prompts of different lengths."""

from __future__ import annotations

import pytest
import torch
from conftest import lora_policy

from services.learner.logprobs import completion_logprobs, completion_logprobs_naive
from services.learner.model import pad_batch


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return lora_policy(tiny_model_dir, ["q_proj", "v_proj", "down_proj"])


def _batch():
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (5, 11, 8)]
    comps = [torch.randint(3, 500, (n,), generator=g).tolist() for n in (7, 2, 12)]
    full = [p + c for p, c in zip(prompts, comps, strict=True)]
    ids, attn = pad_batch(full, 0, "cpu")
    return ids, attn, [len(p) for p in prompts], [len(f) for f in full]


def _values_and_grads(model, fn, **kw):
    model.zero_grad(set_to_none=True)
    ids, attn, p, t = _batch()
    lp, mask = fn(model, ids, attn, p, t, **kw)
    weights = torch.linspace(-1, 1, lp.numel()).reshape(lp.shape)
    (lp * mask * weights).sum().backward()
    grads = {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}
    return lp.detach(), mask, grads


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk", [1, 5, 128])
def test_chunked_equals_naive(policy, temperature, chunk):
    ref, ref_mask, ref_g = _values_and_grads(policy, completion_logprobs_naive,
                                             temperature=temperature)
    got, mask, g = _values_and_grads(policy, completion_logprobs, temperature=temperature,
                                     chunk=chunk)
    assert torch.equal(mask, ref_mask)
    assert mask.sum().item() == 7 + 2 + 12
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert set(g) == set(ref_g) and len(g) == 3 * 2 * policy.config.num_hidden_layers
    for n in ref_g:
        torch.testing.assert_close(g[n], ref_g[n], atol=1e-5, rtol=1e-4, msg=n)


def test_temperature_changes_the_values(policy):
    ids, attn, p, t = _batch()
    with torch.no_grad():
        a, m = completion_logprobs(policy, ids, attn, p, t, temperature=1.0)
        b, _ = completion_logprobs(policy, ids, attn, p, t, temperature=0.7)
    assert (a - b)[m].abs().max() > 1e-3


def test_adapter_disabled_scores_the_base(policy):
    ids, attn, p, t = _batch()
    with torch.no_grad():
        with policy.disable_adapter():
            base, m = completion_logprobs(policy, ids, attn, p, t, temperature=1.0)
            base_ref, _ = completion_logprobs_naive(policy, ids, attn, p, t, temperature=1.0)
        tuned, _ = completion_logprobs(policy, ids, attn, p, t, temperature=1.0)
    torch.testing.assert_close(base, base_ref, atol=1e-5, rtol=0)
    assert (base - tuned)[m].abs().max() > 1e-4
