"""The shared-prompt pass (each group's prompt once, its keys/values reused by the group's
completions) equals the per-sequence pass: log-probs and LoRA gradients, fp32, 1e-5; groups of
different sizes, prompts and completions of different lengths, temperature 1 and not 1."""

from __future__ import annotations

import pytest
import torch
from conftest import lora_policy

from services.learner.logprobs import completion_logprobs, completion_logprobs_naive
from services.learner.model import pad_batch
from services.learner.shared_prompt import grouped_logprobs


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    # k_proj too: the shared prompt's keys take gradients from every completion of a group.
    return lora_policy(tiny_model_dir, ["q_proj", "k_proj", "v_proj", "down_proj"])


def _groups():
    g = torch.Generator().manual_seed(3)
    rand = lambda n: torch.randint(3, 500, (n,), generator=g).tolist()  # noqa: E731
    prompts = [rand(n) for n in (6, 13, 9)]
    completions = [[rand(n) for n in (7, 1, 12, 4)], [rand(n) for n in (3,)],
                   [rand(n) for n in (10, 10, 2)]]
    return prompts, completions


def _weighted_backward(model, lp, mask):
    weights = torch.linspace(-1, 1, lp.numel(), device=lp.device).reshape(lp.shape)
    (lp * mask * weights).sum().backward()
    return {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}


def _per_sequence(model, fn, prompts, completions, device="cpu", **kw):
    model.zero_grad(set_to_none=True)
    full = [p + c for p, g in zip(prompts, completions, strict=True) for c in g]
    p_lens = [len(p) for p, g in zip(prompts, completions, strict=True) for _ in g]
    ids, attn = pad_batch(full, 0, device)
    lp, mask = fn(model, ids, attn, p_lens, [len(f) for f in full], **kw)
    return lp.detach(), mask, _weighted_backward(model, lp, mask)


def _shared(model, prompts, completions, **kw):
    model.zero_grad(set_to_none=True)
    lp, mask = grouped_logprobs(model, prompts, completions, pad_id=0, **kw)
    return lp.detach(), mask, _weighted_backward(model, lp, mask)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk", [3, 128])
def test_shared_prompt_equals_per_sequence(policy, temperature, chunk):
    prompts, completions = _groups()
    ref, ref_mask, ref_g = _per_sequence(policy, completion_logprobs_naive, prompts,
                                         completions, temperature=temperature)
    got, mask, g = _shared(policy, prompts, completions, temperature=temperature, chunk=chunk)
    assert torch.equal(mask, ref_mask)
    assert mask.sum().item() == sum(len(c) for grp in completions for c in grp)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert set(g) == set(ref_g) and len(g) == 4 * 2 * policy.config.num_hidden_layers
    for n in ref_g:
        torch.testing.assert_close(g[n], ref_g[n], atol=1e-5, rtol=1e-4, msg=n)


def test_shared_prompt_equals_chunked_path(policy):
    """Against the learner's other (chunked) pass too, and with one group alone."""
    prompts, completions = _groups()
    for ps, cs in ((prompts, completions), (prompts[:1], completions[:1])):
        ref, _, ref_g = _per_sequence(policy, completion_logprobs, ps, cs, temperature=1.0,
                                      chunk=128)
        got, _, g = _shared(policy, ps, cs, temperature=1.0, chunk=128)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
        for n in ref_g:
            torch.testing.assert_close(g[n], ref_g[n], atol=1e-5, rtol=1e-4, msg=n)


def test_prompt_runs_once_per_group(policy):
    """One decoder call, one row per group holding its prompt once and its completions back
    to back (no padding between siblings)."""
    prompts, completions = _groups()
    seen = []
    decoder = policy.get_base_model().model
    hook = decoder.embed_tokens.register_forward_hook(
        lambda _m, args, _o: seen.append(args[0].shape))
    try:
        with torch.no_grad():
            grouped_logprobs(policy, prompts, completions, pad_id=0, temperature=1.0)
    finally:
        hook.remove()
    widest = max(len(p) + sum(len(c) for c in g)
                 for p, g in zip(prompts, completions, strict=True))
    assert seen == [(len(prompts), widest)]


def test_eager_attention_takes_the_same_mask(policy):
    """Eager attention adds its mask to the scores; the boolean mask is converted for it."""
    prompts, completions = _groups()
    ref, _, ref_g = _shared(policy, prompts, completions, temperature=1.0)
    base = policy.get_base_model()
    base.set_attn_implementation("eager")
    try:
        assert base.config._attn_implementation == "eager"
        got, _, g = _shared(policy, prompts, completions, temperature=1.0)
    finally:
        base.set_attn_implementation("sdpa")
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    for n in ref_g:
        torch.testing.assert_close(g[n], ref_g[n], atol=1e-5, rtol=1e-4, msg=n)


def test_rows_padded_to_a_width_multiple_change_nothing(policy):
    """The learner pads rows to a multiple of its width (few shapes for oneDNN's cache): the
    padding is masked and never scored, so values and gradients are those of the unpadded
    pass, and the decoder really sees the padded width."""
    prompts, completions = _groups()
    ref, ref_mask, ref_g = _shared(policy, prompts, completions, temperature=1.0)
    seen = []
    hook = policy.get_base_model().model.embed_tokens.register_forward_hook(
        lambda _m, args, _o: seen.append(args[0].shape[1]))
    try:
        got, mask, g = _shared(policy, prompts, completions, temperature=1.0, width_multiple=16)
    finally:
        hook.remove()
    widest = max(len(p) + sum(len(c) for c in grp)
                 for p, grp in zip(prompts, completions, strict=True))
    assert seen == [-(-widest // 16) * 16] and seen[0] > widest
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    for n in ref_g:
        torch.testing.assert_close(g[n], ref_g[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_shared_prompt_on_cuda(policy):
    """On CUDA too (SDPA's CUDA kernels take the block mask): fp32 values and gradients equal
    the per-sequence pass; and in bf16 the memory-efficient kernel alone runs it (no fallback
    to the math kernel, whose `[heads, L, L]` scores the memory plan does not count), within
    bf16 rounding of the fp32 result."""
    import copy

    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = copy.deepcopy(policy).cuda()
    prompts, completions = _groups()
    ref, ref_mask, ref_g = _per_sequence(model, completion_logprobs_naive, prompts, completions,
                                         device="cuda", temperature=1.0)
    got, mask, g = _shared(model, prompts, completions, temperature=1.0, chunk=3)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    for n in ref_g:
        torch.testing.assert_close(g[n], ref_g[n], atol=1e-5, rtol=1e-4, msg=n)
    model.get_base_model().to(torch.bfloat16)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        low, _, low_g = _shared(model, prompts, completions, temperature=1.0)
    torch.testing.assert_close(low, ref, atol=0.1, rtol=0.02)
    assert set(low_g) == set(ref_g)
