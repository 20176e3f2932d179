"""Load the base model with a LoRA adapter, build the optimizer, compute token log-probs."""

from __future__ import annotations

import contextlib

import torch

from services.config import LearnerConfig, LoraConfig, ModelConfig
from services.dtypes import resolve_dtype


def pick_device(cfg: LearnerConfig) -> str:
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def torch_dtype(model: ModelConfig, device: str) -> torch.dtype:
    return getattr(torch, resolve_dtype(model.dtype, device))


def _prepare_kbit(model, gradient_checkpointing: bool) -> None:
    """What QLoRA training needs from a 4-bit model, without peft's
    `prepare_model_for_kbit_training`: that casts every unquantized parameter to fp32,
    including the tied embedding / lm_head (151,936 x 1,536 for Qwen2.5: 0.93 GB instead of
    0.47), and with fp32 norms the whole residual stream runs in fp32. Here the base stays
    frozen at its load dtype; LoRA weights are fp32 (peft's `autocast_adapter_dtype`) and CUDA
    compute runs under bf16 autocast."""
    for p in model.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # Checkpointed blocks need an input that requires grad, or backward skips them.
        model.enable_input_require_grads()


def load_policy(model_path: str, model_cfg: ModelConfig, lora_cfg: LoraConfig,
                learner_cfg: LearnerConfig, device: str):
    """Base model (optionally 4-bit NF4) + a fresh LoRA adapter (B = 0: starts as the base)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch_dtype(model_cfg, device)
    kwargs: dict = {"dtype": dtype}
    if learner_cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": device if device == "cpu" else 0}
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if learner_cfg.load_in_4bit:
        _prepare_kbit(model, learner_cfg.gradient_checkpointing)
    else:
        model.to(device)
        if learner_cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
    model.config.use_cache = False
    peft_cfg = PeftLoraConfig(
        r=lora_cfg.rank, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules), task_type="CAUSAL_LM", bias="none",
    )
    return get_peft_model(model, peft_cfg)


def autocast(device: str, dtype: torch.dtype):
    """Autocast to the base's half dtype (LoRA weights are fp32, the base is not): bf16/fp16 on
    CUDA, bf16 on a CPU (oneDNN's bf16 matmuls on an AVX512-BF16 core: 2x the learner's
    tokens/s of fp32, benchmarks/learner_speed.py). An fp32 model runs without autocast."""
    if device == "cuda" and dtype in (torch.bfloat16, torch.float16):
        return torch.autocast("cuda", dtype=dtype)
    if device == "cpu" and dtype == torch.bfloat16:
        return torch.autocast("cpu", dtype=dtype)
    return contextlib.nullcontext()


def build_optimizer(params, cfg: LearnerConfig, device: str) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    import bitsandbytes as bnb

    if cfg.optimizer == "paged_adamw8bit" and device == "cuda":
        return bnb.optim.PagedAdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Paging needs CUDA unified memory; on a CPU the plain 8-bit optimizer is the same math.
    return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def pad_batch(seqs: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to `[B, L]`; returns (input_ids, attention_mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attn[i, : len(s)] = 1
    return ids.to(device), attn.to(device)
