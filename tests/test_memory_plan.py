"""The memory planner against sizes computed by hand, its refusal, and `mathrl plan`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, tiny_config

from services.config import RunConfig, load_config
from services.memory import GiB, load_shape, plan_run, refusal
from services.memory.check import fit_problem
from services.memory.plan import (
    NF4_BYTES,
    attention_bytes,
    graph_captures,
    kv_cache_bytes,
    learner_side,
    logprob_bytes,
    reported_bytes,
    step_kv_tokens,
)

QWEN = "Qwen/Qwen2.5-Math-1.5B"
CFG12 = ROOT / "configs" / "qwen2.5-math-1.5b-gsm8k-12gb.toml"
PROFILES = sorted((ROOT / "configs").glob("qwen2.5-math-1.5b-gsm8k-*gb.toml"))


def test_qwen_shape_by_hand():
    s = load_shape(QWEN)  # the shipped config.json: no network
    # 28 layers x K,V x 2 KV heads x 128 dims x 2 bytes (bf16)
    assert s.kv_bytes_per_token(2) == 28 * 2 * 2 * 128 * 2 == 28_672
    # Embedding (tied) 151,936 x 1,536; per block q/o 1536^2, k/v 1536 x 256, MLP 3 x 1536 x 8960,
    # q/k/v biases 1536 + 2 x 256, two norms 2 x 1536; the final norm 1536.
    block = 2 * 1536**2 + 2 * 1536 * 256 + 3 * 1536 * 8960 + (1536 + 512) + 2 * 1536
    n = 151_936 * 1536 + 28 * block + 1536
    assert s.n_params == n == 1_543_714_304
    # LoRA r=16 on all seven linear layers: r x (in + out) each, 28 blocks.
    per_block = 16 * ((1536 + 1536) * 2 + (1536 + 256) * 2 + (1536 + 8960) * 3)
    assert s.lora_params(16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                              "down_proj"]) == 28 * per_block == 18_464_768
    assert s.lora_params(8, ["q_proj"]) == 28 * 8 * (1536 + 1536)


def test_weights_per_dtype_and_4bit():
    s = load_shape(QWEN)
    cfg = load_config(CFG12)
    plan = plan_run(s, cfg)
    assert plan.generator.components["weights"] == 1_543_714_304 * 2  # bf16 in vLLM
    linear = 28 * (2 * 1536**2 + 2 * 1536 * 256 + 3 * 1536 * 8960)
    rest = 1_543_714_304 - linear  # embedding, norms, biases stay bf16
    assert plan.learner.components["weights"] == pytest.approx(linear * NF4_BYTES + rest * 2,
                                                               abs=1)
    fp = RunConfig.model_validate({**cfg.model_dump(), "learner": {
        **cfg.learner.model_dump(), "load_in_4bit": False}})
    assert plan_run(s, fp).learner.components["weights"] == 1_543_714_304 * 2
    # LoRA adapter + gradient in fp32; 8-bit AdamW at ~2 bytes a parameter.
    assert plan.learner.components["lora"] == 18_464_768 * 8
    assert 2 * 18_464_768 <= plan.learner.components["optimizer"] < 2.1 * 18_464_768


def test_kv_cache_for_one_step_by_hand():
    s = load_shape(QWEN)
    cfg = load_config(CFG12)  # 8 prompts x G=8, <=512 new tokens, max_model_len 1024
    # Prefix caching: each prompt's 512-token budget once, each completion 512 + its own block.
    assert step_kv_tokens(cfg) == 8 * (512 + 8 * (512 + 16))
    assert kv_cache_bytes(s, cfg) == step_kv_tokens(cfg) * 28_672


def test_tiny_model_shape_matches_the_real_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    s = load_shape(str(tiny_model_dir))
    assert s.n_params == sum(p.numel() for p in model.parameters())
    cfg = tiny_config(tiny_model_dir)
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=cfg.lora.rank,
                                            target_modules=cfg.lora.target_modules))
    n_lora = sum(p.numel() for n, p in peft.named_parameters() if "lora_" in n)
    assert s.lora_params(cfg.lora.rank, cfg.lora.target_modules) == n_lora


def test_chunked_logprobs_do_not_grow_with_the_micro_batch():
    s = load_shape(QWEN)
    cfg = load_config(CFG12)

    def with_mb(mb: int, chunk: int) -> int:
        c = cfg.model_copy(update={"learner": cfg.learner.model_copy(
            update={"micro_batch_size": mb, "micro_batch_tokens": None,
                    "logprob_chunk_tokens": chunk})})
        return logprob_bytes(s, c)

    # Naive: the full logits grow linearly; chunked: one chunk's logits plus the gathered
    # hidden states (1,536 wide, not 151,936).
    assert with_mb(4, 0) == pytest.approx(2 * with_mb(2, 0), rel=0.01)
    assert with_mb(4, 128) - with_mb(2, 128) < 0.01 * GiB
    assert with_mb(2, 0) > 4 * with_mb(2, 128)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem.rsplit("-", 1)[-1])
def test_shipped_profiles_fit_their_card_and_carry_their_plan(profile):
    cfg = load_config(profile)
    plan = plan_run(load_shape(cfg.model.name_or_path), cfg)
    assert plan.fits, refusal(plan)
    # Against what CUDA reports for the card, not the GiB it is sold as.
    assert plan.card_bytes == reported_bytes(cfg.gpu.memory_gb) < cfg.gpu.memory_gb * GiB
    # The comment block is `mathrl plan`'s output, not numbers typed by hand.
    from orchestrator.cli.plan import render

    text = profile.read_text()
    for line in render(plan, cfg):
        assert f"# {line}" in text, f"{profile.name} lacks the plan line {line!r}"


def test_attention_mask_bytes_by_hand():
    """The 12gb profile: passes of 8,192 positions; a shared-prompt row is at most one group,
    512 + 7 x 512 + 512 = 4,608 wide (max_model_len 1,024 holds the prompt and one completion).
    Mask entries <= 8,192 x 4,608, each a bool plus two bf16 copies on CUDA."""
    s = load_shape(QWEN)
    cfg = load_config(CFG12)
    assert cfg.learner.micro_batch_tokens == 8192 and cfg.rollout.group_size == 8
    assert attention_bytes(s, cfg) == 8192 * 4608 * (1 + 2 * 2)

    def with_learner(**kw) -> RunConfig:
        return cfg.model_copy(update={"learner": cfg.learner.model_copy(update=kw)})

    # One row per sequence: rows are max_model_len wide.
    assert attention_bytes(s, with_learner(shared_prompt=False)) == 8192 * 1024 * 5
    # A budget narrower than a group: rows are at most the budget wide.
    assert attention_bytes(s, with_learner(micro_batch_tokens=2048)) == 2048 * 2048 * 5
    # Fixed micro-batches of 4: 4 x 1,024 positions.
    assert attention_bytes(s, with_learner(micro_batch_tokens=None)) == 4096 * 4096 * 5
    # It is part of the activations the plan adds up.
    no_mask = learner_side(s, with_learner(shared_prompt=False)).components["activations"]
    assert learner_side(s, cfg).components["activations"] - no_mask == 8192 * 3584 * 5


def test_refusal_names_the_largest_component_and_a_setting():
    cfg = load_config(CFG12)
    s = load_shape(QWEN)
    small = plan_run(s, cfg, gpu_gb=6)
    setting, msg = refusal(small)
    assert "generator.weights" in msg  # the largest part
    # The profile packs passes by a token budget: that budget sizes the activations, the
    # largest part a setting can shrink.
    assert setting == "learner.micro_batch_tokens" and "learner.activations" in msg
    fixed = cfg.model_copy(update={"learner": cfg.learner.model_copy(
        update={"micro_batch_size": 1, "micro_batch_tokens": None})})
    setting, msg = refusal(plan_run(s, fixed, gpu_gb=6))
    # One sequence a pass is the floor: the KV cache is the largest part left to shrink.
    assert setting == "rollout.prompts_per_step" and "generator.kv_cache" in msg
    # Naive log-probs at micro-batch 8 on 12 GiB: the log-prob working set is the largest
    # part a setting can shrink.
    big = cfg.model_copy(update={"learner": cfg.learner.model_copy(
        update={"micro_batch_size": 8, "micro_batch_tokens": None,
                "logprob_chunk_tokens": 0})})
    setting, msg = refusal(plan_run(s, big))
    assert setting == "learner.logprob_chunk_tokens" and "learner.logprobs" in msg
    assert fit_problem(big) == refusal(plan_run(s, big))
    # A CPU run with no card named is not planned.
    assert fit_problem(tiny_cpu := big.model_copy(update={
        "learner": big.learner.model_copy(update={"device": "cpu"}),
        "gpu": big.gpu.model_copy(update={"memory_gb": None})})) is None, tiny_cpu.name


def test_sleep_mode_frees_the_generator_while_the_learner_steps():
    cfg = load_config(CFG12)
    s = load_shape(QWEN)
    awake = plan_run(s, cfg)
    asleep = plan_run(s, cfg.model_copy(update={"generator": cfg.generator.model_copy(
        update={"sleep_mode": True})}))
    assert asleep.total < awake.total
    # Still at least the generator at full size next to the learner at rest.
    lc = learner_side(s, cfg).components
    rest = lc["context"] + lc["weights"] + lc["lora"] + lc["optimizer"]
    assert asleep.total >= awake.generator.total + rest + awake.other.total


def _mathrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_plan_cli_json_contract():
    r = _mathrl("plan", str(CFG12), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["card_bytes"] == 12037 * 2**20 and out["fits"] is True
    for side, names in (("generator", {"weights", "kv_cache"}),
                        ("learner", {"weights", "lora", "optimizer", "activations", "logprobs"})):
        assert names <= set(out[side]["components"])
        assert out[side]["total"] == sum(out[side]["components"].values())
    assert out["total"] >= out["generator"]["total"] + out["learner"]["total"]
    small = json.loads(_mathrl("plan", str(CFG12), "--json", "--gpu-gb", "6").stdout)
    assert small["card_bytes"] == int(6 * GiB * 0.939) and small["fits"] is False


def test_train_refuses_a_plan_that_does_not_fit(tmp_path: Path):
    text = CFG12.read_text().replace("memory_gb = 12.0", "memory_gb = 6.0")
    cfg = tmp_path / "six.toml"
    cfg.write_text(text)
    r = _mathrl("train", str(cfg), "--out-dir", str(tmp_path / "runs"))
    assert r.returncode != 0
    assert "memory plan" in r.stderr and "learner.micro_batch_tokens" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything started


def test_unsupported_lora_rank_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_lora_rank"):
        RunConfig.model_validate({"lora": {"rank": 24}, "generator": {"max_lora_rank": 24}})
    RunConfig.model_validate({"lora": {"rank": 24}, "generator": {"max_lora_rank": 32}})


# --- issue 16: the card as CUDA reports it, and what vLLM 0.32 allocates ------------------

def test_card_is_what_cuda_reports():
    """A card sold as 12 GB reports about 11.76 GiB to CUDA (torch's total_memory, the figure
    vLLM's utilization is a share of); the plan fills that, or an exact figure the user gives."""
    MiB = 2**20
    assert [reported_bytes(n) for n in (8, 12, 16)] == [7695 * MiB, 12037 * MiB, 15825 * MiB]
    assert reported_bytes(24) == int(24 * GiB * 0.939)  # not in the table: the lowest ratio
    cfg = load_config(CFG12)
    assert plan_run(load_shape(QWEN), cfg).card_bytes == 12037 * MiB
    exact = cfg.model_copy(update={"gpu": cfg.gpu.model_copy(
        update={"memory_bytes": 12_636_061_696})})
    assert plan_run(load_shape(QWEN), exact).card_bytes == 12_636_061_696
    # --gpu-gb names another card: its table figure wins over the config's exact one.
    assert plan_run(load_shape(QWEN), exact, gpu_gb=16).card_bytes == 15825 * MiB
    # An exact figure alone binds the run, as memory_gb does.
    from services.memory.check import applies

    cpu = exact.model_copy(update={"learner": exact.learner.model_copy(update={"device": "cpu"}),
                                   "gpu": exact.gpu.model_copy(update={"memory_gb": None})})
    assert applies(cpu)


def test_penalty_state_by_hand():
    """vLLM 0.32's V2 sampler holds int32 `[max_num_seqs, vocab]` output counts and an int32
    `[max_num_seqs, ceil(vocab / 32)]` prompt mask (v1/worker/gpu/sample/penalties.py):
    64 sequences x 151,936 x 4 = 37.1 MiB, plus 64 x 4,748 x 4."""
    plan = plan_run(load_shape(QWEN), load_config(CFG12))
    assert plan.generator.components["penalties"] == 64 * 151_936 * 4 + 64 * 4_748 * 4


def test_vllm_lora_slots_cover_every_linear_layer():
    """vLLM wraps every linear layer (no --lora-target-modules) and gives each max_loras slots
    at max_lora_rank in bf16, whatever the adapter targets; the learner holds only its own."""
    cfg = load_config(CFG12)
    two = cfg.model_copy(update={"lora": cfg.lora.model_copy(
        update={"target_modules": ["q_proj", "v_proj"]})})
    plan = plan_run(load_shape(QWEN), two)
    assert plan.generator.components["lora"] == 2 * 18_464_768 * 2  # all seven, r = 16
    assert plan.learner.components["lora"] == 28 * 16 * ((1536 + 1536) + (1536 + 256)) * 8


def _vllm_captures(args: list[str]) -> tuple[int, list[int], list[int]]:
    """(graphs, capture sizes, LoRA cases) that vLLM 0.32's own code derives from these `vllm
    serve` flags on CUDA: `VllmConfig._set_cudagraph_sizes`, then the V2 runner's
    `get_lora_capture_cases` and `CudaGraphManager._init_candidates`, on stand-ins for the
    configs they read (the CPU build cannot build a CUDA VllmConfig)."""
    import dataclasses
    from types import SimpleNamespace

    from vllm.config import CompilationConfig, VllmConfig
    from vllm.config.lora import LoRAConfig
    from vllm.config.vllm import OPTIMIZATION_LEVEL_TO_CONFIG
    from vllm.v1.worker.gpu.cudagraph_utils import CudaGraphManager
    from vllm.v1.worker.gpu.lora_utils import get_lora_capture_cases

    flag = lambda name: args[args.index(name) + 1]  # noqa: E731
    cc = CompilationConfig(**json.loads(flag("--compilation-config"))
                           if "--compilation-config" in args else {})
    if cc.cudagraph_mode is None:  # the default optimization level's mode (O2)
        level = {f.name: f for f in dataclasses.fields(VllmConfig)}["optimization_level"]
        cc.cudagraph_mode = OPTIMIZATION_LEVEL_TO_CONFIG[level.default][
            "compilation_config"]["cudagraph_mode"]
    seqs = int(flag("--max-num-seqs"))
    VllmConfig._set_cudagraph_sizes(SimpleNamespace(
        model_config=SimpleNamespace(enforce_eager="--enforce-eager" in args),
        compilation_config=cc, uniform_decode_query_len=1, performance_mode="balanced",
        speculative_config=None, scheduler_config=SimpleNamespace(
            max_num_seqs=seqs, max_num_batched_tokens=int(flag("--max-num-batched-tokens")))))
    cases = get_lora_capture_cases(LoRAConfig(max_loras=int(flag("--max-loras")),
                                              max_lora_rank=int(flag("--max-lora-rank"))), cc)
    manager = SimpleNamespace(
        compilation_config=cc, cudagraph_mode=cc.cudagraph_mode, max_num_reqs=seqs,
        decode_query_len=1, varlen_decode=False, lora_capture_cases=cases, ubatch_runner=None,
        _capture_descs={}, _candidates={}, _maybe_ubatch_twin=lambda desc: None,
        vllm_config=SimpleNamespace(speculative_config=None,
                                    cache_config=SimpleNamespace(use_kda_recoverssm=False)))
    CudaGraphManager._init_candidates(manager)
    graphs = sum(len(d) for d in manager._capture_descs.values())
    return graphs, cc.cudagraph_capture_sizes, cases


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem.rsplit("-", 1)[-1])
def test_graph_count_is_vllms_for_the_launched_flags(profile):
    """The plan counts the CUDA graphs vLLM 0.32 captures with the flags the launcher gives."""
    from services.generator.launcher import server_args

    cfg = load_config(profile)
    graphs, sizes, cases = _vllm_captures(server_args(cfg, model_path=QWEN, device="cuda"))
    assert graph_captures(cfg) == graphs
    # V2 keeps a no-adapter set next to the max_loras + 1 one (a specialize_lora flag or not).
    assert cases == [0, cfg.generator.max_loras + 1]
    if profile == CFG12:  # by hand: 19 sizes (1, 2, 4, 8..128) piecewise, 11 of them <= 64
        assert sizes == [1, 2, 4, *range(8, 129, 8)]  # full decode graphs, both LoRA cases
        assert graphs == 2 * (19 + 11) == 60


def test_a_run_is_planned_beside_the_generator_that_is_running():
    """A service plans a submitted run's learner beside the generator it actually runs (its
    stack's config, on that card), not beside the generator the run's own config describes:
    the 16 GB profile fits its own card, but its bf16 learner does not fit next to the 12 GB
    stack's vLLM on a 12 GB card."""
    c12, c16 = load_config(CFG12), load_config(CFG12.with_name(CFG12.name.replace("12gb", "16gb")))
    assert fit_problem(c16) is None
    field, msg = fit_problem(c16, served=c12)
    assert field == "learner.load_in_4bit" and "12 GB card" in msg, msg
    assert fit_problem(c12, served=c12) is None
