"""The sizes of a decoder-only model (Qwen2 / Llama family) read from its `config.json`.

Pure arithmetic: parameter counts per module, LoRA parameter counts, KV bytes per token. The
config comes from a local model directory, from the copies shipped in `models/` (so planning a
hub model works offline), or from the Hugging Face cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "models"

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qkv_bias: bool = True
    """Qwen2 has biases on q/k/v; Llama has none."""

    @classmethod
    def from_config(cls, cfg: dict) -> ModelShape:
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        return cls(
            vocab=int(cfg["vocab_size"]), hidden=hidden,
            intermediate=int(cfg["intermediate_size"]), layers=int(cfg["num_hidden_layers"]),
            heads=heads, kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            tied=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=cfg.get("model_type", "qwen2") == "qwen2",
        )

    # ---------------------------------------------------------------- module sizes
    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder block."""
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linear_params(self) -> int:
        """Weights of every block's linear layers (what a 4-bit load quantizes)."""
        return self.layers * sum(a * b for a, b in self.linear_dims().values())

    @property
    def embedding_params(self) -> int:
        """Input embedding plus an untied lm_head (a tied one shares the embedding)."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def small_params(self) -> int:
        """Norm weights and q/k/v biases: kept unquantized."""
        bias = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        return self.layers * (2 * self.hidden + bias) + self.hidden

    @property
    def n_params(self) -> int:
        return self.linear_params + self.embedding_params + self.small_params

    def lora_params(self, rank: int, targets: list[str]) -> int:
        """A (r x in) + B (out x r) for each targeted linear layer of every block."""
        dims = self.linear_dims()
        unknown = [t for t in targets if t not in dims]
        if unknown:
            raise ValueError(f"cannot size LoRA on {unknown}: not a linear layer of the block")
        return self.layers * sum(rank * (dims[t][0] + dims[t][1]) for t in targets)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """K and V of every layer for one token."""
        return 2 * self.layers * self.kv_dim * dtype_bytes


def shipped_name(name_or_path: str) -> Path:
    return SHIPPED / (name_or_path.replace("/", "--") + ".json")


def load_model_config(name_or_path: str) -> dict:
    """The model's `config.json`: local directory, shipped copy, then the HF cache (offline)."""
    local = Path(name_or_path)
    if (local / "config.json").is_file():
        return json.loads((local / "config.json").read_text())
    if shipped_name(name_or_path).is_file():
        return json.loads(shipped_name(name_or_path).read_text())
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
    except Exception:  # noqa: BLE001 - an invalid repo id is "not cached" too
        cached = None
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text())
    raise FileNotFoundError(
        f"no config.json for {name_or_path!r}: not a local model directory, not shipped in "
        f"{SHIPPED}, not in the Hugging Face cache"
    )


def load_shape(name_or_path: str) -> ModelShape:
    return ModelShape.from_config(load_model_config(name_or_path))
