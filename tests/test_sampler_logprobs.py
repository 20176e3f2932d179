"""On the real CPU stack: vLLM's sampler log-probs are those of the temperature-scaled policy
(`--logprobs-mode processed_logprobs`), equal to the learner's within 1e-4 per token (fp32),
and only the last `generator.keep_adapters` adapter folders stay on disk."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from orchestrator.run.stack import prepare_run
from services.learner.logprobs import completion_logprobs
from services.learner.model import pad_batch
from services.schemas import GenerateRequest

pytestmark = pytest.mark.slow
T = 0.7


def test_sampler_matches_learner_at_t07_and_old_adapters_are_deleted(stack, tiny_model_dir,
                                                                      tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tiny_model_dir, name="keep", rollout__temperature=T,
                      generator__keep_adapters=2, schedule__steps=4, learner__lr=0.02,
                      generator__port=stack.cfg.generator.port)
    handle = prepare_run(stack, cfg, tmp_path / "run")
    try:
        handle.loop.run()
        adapters = tmp_path / "run" / "adapters"
        assert sorted(p.name for p in adapters.iterdir()) == ["step-3", "step-4"]
        served = handle.sync.served
        # Prompts of different lengths, sampled at T = 0.7 from the trained policy.
        prompts = [handle.loop.prompts(i) for i in range(3)]
        prompts[1] = prompts[1][:-3]
        prompts[2] = prompts[2] + prompts[0][:5]
        groups = stack.client.generate(GenerateRequest(
            model=served, prompts=prompts, n=2, max_tokens=12, temperature=T))
        # The alias still serves after older folders were deleted.
        stack.client.generate(GenerateRequest(model=cfg.generator.alias, prompts=prompts[:1],
                                              n=1, max_tokens=4, temperature=T))
    finally:
        handle.close()

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapters / "step-4")).eval()
    seqs = [(p, c) for p, g in zip(prompts, groups, strict=True) for c in g]
    ids, attn = pad_batch([p + c.token_ids for p, c in seqs], 0, "cpu")
    with torch.no_grad():
        lp, mask = completion_logprobs(model, ids, attn, [len(p) for p, _ in seqs],
                                       [len(p) + len(c.token_ids) for p, c in seqs],
                                       temperature=T)
    worst = 0.0
    for i, (_, c) in enumerate(seqs):
        n = len(c.token_ids)
        assert n > 0 and mask[i, :n].all()
        diff = (lp[i, :n] - torch.tensor(c.logprobs)).abs().max().item()
        worst = max(worst, diff)
    assert worst < 1e-4, worst
