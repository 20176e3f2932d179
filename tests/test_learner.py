"""The learner in-process (no vLLM): QLoRA path, 8-bit AdamW, reference KL, adapter files."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_config

from services.learner.learner import Learner
from services.schemas import TrainBatch, TrainSequence


def _batch(step: int = 0) -> TrainBatch:
    prompt = [1, 87, 85, 71, 84, 201, 2, 201, 1, 273]
    return TrainBatch(step=step, sequences=[
        TrainSequence(prompt_ids=prompt, completion_ids=[300, 301, 302], advantage=1.0),
        TrainSequence(prompt_ids=prompt[:7], completion_ids=[5, 6, 7, 8, 9], advantage=-1.0),
        TrainSequence(prompt_ids=prompt, completion_ids=[40], advantage=0.5),
    ])


def test_adapter_written_every_step(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, learner__micro_batch_size=2)
    learner = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path))
    first = learner.publish()
    assert first.version == 0
    res = learner.train_step(_batch())
    assert res.adapter.version == 1
    files = {p.name for p in (tmp_path / "adapters" / "step-1").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files
    conf = json.loads((tmp_path / "adapters" / "step-1" / "adapter_config.json").read_text())
    assert conf["r"] == cfg.lora.rank
    assert res.metrics["optim/grad_norm"] > 0


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_micro_batches_equal_one_batch(tiny_model_dir, tmp_path, agg):
    """Gradient accumulation over micro-batches gives the same update as one big batch."""
    import torch

    grads = []
    for mbs in (1, 3):
        cfg = tiny_config(tiny_model_dir, learner__micro_batch_size=mbs,
                          algorithm__loss_agg=agg)
        learner = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path / str(mbs)))
        learner.optimizer.step = lambda: None  # keep weights: compare the gradients only
        learner.optimizer.zero_grad = lambda set_to_none=True: None
        learner.train_step(_batch())
        grads.append(torch.cat([p.grad.flatten() for p in learner.model.parameters()
                                if p.requires_grad]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_qlora_8bit_adam_kl_and_checkpointing(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, learner__load_in_4bit=True,
                      learner__optimizer="paged_adamw8bit", learner__gradient_checkpointing=True,
                      algorithm__beta=0.1, learner__lr=0.05)
    learner = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path))
    assert type(learner.optimizer).__name__ == "AdamW8bit"  # paging needs CUDA
    linear4 = [m for m in learner.model.modules() if type(m).__name__ == "Linear4bit"]
    assert linear4, "base layers should be bitsandbytes 4-bit"
    kls = [learner.train_step(_batch(i)).metrics["loss/kl"] for i in range(3)]
    assert kls[0] == pytest.approx(0.0, abs=1e-6)  # policy == reference before any update
    assert kls[-1] > 0.0


def test_4bit_keeps_embedding_at_the_load_dtype(tiny_model_dir, tmp_path):
    """peft's prepare_model_for_kbit_training would upcast the tied embedding / lm_head to
    fp32 (0.93 GB instead of 0.47 for Qwen2.5-1.5B); the learner keeps it at the load dtype,
    with fp32 LoRA weights, and still trains."""
    import torch

    cfg = tiny_config(tiny_model_dir, learner__load_in_4bit=True, model__dtype="bfloat16",
                      learner__gradient_checkpointing=True, learner__optimizer="adamw8bit")
    learner = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path))
    base = learner.model.get_base_model()
    assert base.get_input_embeddings().weight.dtype == torch.bfloat16
    assert base.get_output_embeddings().weight.dtype == torch.bfloat16
    lora = [p for n, p in learner.model.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora)
    assert not any(p.requires_grad for n, p in learner.model.named_parameters()
                   if "lora_" not in n)
    res = learner.train_step(_batch())
    assert res.metrics["optim/grad_norm"] > 0


def test_tis_metrics_when_sampler_logprobs_come(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir)
    learner = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path))
    b = _batch()
    seqs = [s.model_copy(update={"sampler_logprobs": [-50.0] * len(s.completion_ids)})
            for s in b.sequences]
    m = learner.train_step(TrainBatch(step=0, sequences=seqs)).metrics
    # The sampler gave every token ~0 probability: every weight hits the cap.
    assert m["off_policy/clipped_frac"] == 1.0
    assert m["off_policy/is_weight_mean"] == cfg.algorithm.tis_cap
    assert m["perf/learner_tokens_per_s"] > 0
    off = tiny_config(tiny_model_dir, algorithm__tis_cap=None)
    m = Learner(off, model_path=str(tiny_model_dir), run_dir=str(tmp_path / "off")).train_step(
        TrainBatch(step=0, sequences=seqs)).metrics
    assert "off_policy/is_weight_mean" not in m


def test_memory_cap_message_names_the_component():
    from services.learner.memcap import MemoryCap

    cap = MemoryCap(3 * 2**30, {"context": 1, "weights": 2**30, "activations": 2**30,
                                "logprobs": 2**28})
    msg = cap.explain(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nTRACE"))
    assert "learner.activations" in msg and "learner.micro_batch_size" in msg
    assert "3.00 GiB" in msg and "Tried to allocate 2.00 GiB" in msg and "TRACE" not in msg
    budget = MemoryCap(cap.cap_bytes, cap.components, "learner.micro_batch_tokens")
    assert "lower learner.micro_batch_tokens" in budget.explain(RuntimeError("CUDA out of memory"))


def test_bf16_cpu_learner_runs_its_matmuls_in_bf16(tiny_model_dir, tmp_path):
    """`model.dtype = "bfloat16"` on a CPU: bf16 base weights, fp32 LoRA weights, and the
    projections, LoRA's included, computed in bf16 under CPU autocast (the speed-up; an fp32
    learner computes them in fp32). Its log-probs stay within bf16 rounding of the fp32
    learner's, and it trains."""
    import torch

    seen: dict[str, set] = {}

    def record(name):
        def hook(_module, _inputs, output):
            seen.setdefault(name, set()).add(output.dtype)
        return hook

    logps = {}
    for dtype in ("float32", "bfloat16"):
        cfg = tiny_config(tiny_model_dir, model__dtype=dtype, learner__device="cpu")
        learner = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path / dtype))
        base = learner.model.get_base_model()
        lora = [p for n, p in learner.model.named_parameters() if "lora_" in n]
        assert lora and all(p.dtype == torch.float32 for p in lora)
        q_proj = base.model.layers[0].self_attn.q_proj
        proj = q_proj.base_layer
        proj.register_forward_hook(record(dtype))
        q_proj.lora_A["default"].register_forward_hook(record(dtype + " lora"))
        seqs = _batch().sequences
        runs, _, _ = learner._micro_batches(seqs)
        with torch.no_grad():
            lp, mask = learner._logprobs(runs[0])
        logps[dtype] = (lp.float(), mask)
        if dtype == "bfloat16":
            assert proj.weight.dtype == torch.bfloat16
            res = learner.train_step(_batch())
            assert res.metrics["optim/grad_norm"] > 0
            # Rows padded to a multiple of 64 (cpu_memory.py), and the metrics count them.
            assert res.metrics["perf/learner_positions"] % 64 == 0
            assert res.metrics["perf/padding_share"] > 0.5
    assert seen == {"float32": {torch.float32}, "float32 lora": {torch.float32},
                    "bfloat16": {torch.bfloat16}, "bfloat16 lora": {torch.bfloat16}}
    (a, mask), (b, _) = logps["float32"], logps["bfloat16"]
    diff = (a - b).abs()[mask.bool()]
    assert diff.max() < 0.1 and diff.mean() < 0.03
