"""Load the base model with a LoRA adapter, build the optimizer, compute token log-probs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from services.config import LearnerConfig, LoraConfig, ModelConfig


def pick_device(cfg: LearnerConfig) -> str:
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def torch_dtype(model: ModelConfig, device: str) -> torch.dtype:
    name = model.dtype if model.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    return getattr(torch, name)


def load_policy(model_path: str, model_cfg: ModelConfig, lora_cfg: LoraConfig,
                learner_cfg: LearnerConfig, device: str):
    """Base model (optionally 4-bit NF4) + a fresh LoRA adapter (B = 0: starts as the base)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, prepare_model_for_kbit_training
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
    if not learner_cfg.load_in_4bit:
        model.to(device)
    if learner_cfg.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=learner_cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif learner_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    peft_cfg = PeftLoraConfig(
        r=lora_cfg.rank, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules), task_type="CAUSAL_LM", bias="none",
    )
    return get_peft_model(model, peft_cfg)


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


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        prompt_lens: list[int], total_lens: list[int], *,
                        temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the completion tokens under `model`, aligned to completion positions.

    Returns `(logprobs [B, T], mask [B, T])` with T = longest completion; token t of
    sequence b is the (prompt_len + t)-th token, predicted from position prompt_len + t - 1.
    Logits are divided by the sampling temperature so that the learner scores the same
    distribution vLLM sampled from.
    """
    start = min(prompt_lens) - 1
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = logits[:, start:-1].float() / temperature  # predicts tokens start+1 .. L-1
    targets = input_ids[:, start + 1 :]
    logps = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    T = max(t - p for p, t in zip(prompt_lens, total_lens, strict=True))
    out = torch.zeros((len(prompt_lens), T), dtype=logps.dtype, device=logps.device)
    mask = torch.zeros((len(prompt_lens), T), dtype=torch.bool, device=logps.device)
    for i, (p, t) in enumerate(zip(prompt_lens, total_lens, strict=True)):
        n = t - p
        out[i, :n] = logps[i, p - start - 1 : p - start - 1 + n]
        mask[i, :n] = True
    return out, mask
