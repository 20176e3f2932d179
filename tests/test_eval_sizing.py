"""`mathrl eval`'s vLLM on a card (issue 16): sized from its own plan, every sequence in flight
at max_model_len; as many sequences as fit when not all do, refused when not one does. No GPU
and no vLLM server: the flags and the refusal are computed here, the CUDA device stood in for."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from orchestrator.cli.evals import server_config, server_plan
from services.generator.launcher import server_args
from services.memory import load_shape
from services.memory.plan import card_of, plan_serving

QWEN = "Qwen/Qwen2.5-Math-1.5B"  # its config.json ships with mathrl: planned offline


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_eval_flags_fit_a_12gb_card():
    """The defaults (32 requests, greedy, max_model_len 2048) on a 12 GB card: a KV cache for
    32 sequences of 2,048 tokens (28 KiB a token), not a 200-prompt GRPO step (14.9e9 bytes,
    utilization 0.95), and a utilization that covers vLLM and no more."""
    cfg = server_config(QWEN, max_model_len=2048, max_new_tokens=512, rank=16,
                        concurrency=32, samples=0)
    card, name = card_of(cfg, 12)
    fitted, plan, refused = server_plan(cfg, QWEN, cuda=True, card_bytes=card, card_name=name)
    assert refused is None and plan.fits and fitted == cfg
    args = server_args(cfg, model_path=QWEN, device="cuda", plan=plan)
    assert int(_flag(args, "--max-num-seqs")) == 32
    assert int(_flag(args, "--kv-cache-memory-bytes")) == 32 * 2048 * 28_672
    share = float(_flag(args, "--gpu-memory-utilization"))
    # vLLM starts only if share x the card is free; that share holds its plan, within 1%.
    assert plan.generator.total <= share * card <= plan.generator.total + 0.01 * card
    assert plan.total <= card and share < 0.6


def test_eval_flags_size_the_cpu_kv_cache_too():
    cfg = server_config(QWEN, max_model_len=1024, max_new_tokens=256, rank=16,
                        concurrency=4, samples=2)
    card, _ = card_of(cfg, 12)
    cfg, plan, refused = server_plan(cfg, QWEN, cuda=False, card_bytes=card)
    assert refused is None
    args = server_args(cfg, model_path=QWEN, device="cpu", plan=plan)
    assert int(_flag(args, "--kv-cache-memory-bytes")) == 8 * 1024 * 28_672


def test_an_eval_too_big_for_the_card_keeps_what_fits():
    """8 samples x 32 requests = 256 sequences of 2,048 tokens: 15 GB of KV cache. vLLM keeps
    as many as the 12 GB card holds and queues the other requests."""
    cfg = server_config(QWEN, max_model_len=2048, max_new_tokens=512, rank=16,
                        concurrency=32, samples=8)
    card, name = card_of(cfg, 12)
    fitted, plan, refused = server_plan(cfg, QWEN, cuda=True, card_bytes=card, card_name=name)
    assert refused is None and plan.fits
    n = fitted.generator.max_num_seqs
    assert 1 <= n < 256
    assert plan.generator.components["kv_cache"] == n * 2048 * 28_672
    # The largest that fits: one more does not.
    over = fitted.model_copy(update={"generator": fitted.generator.model_copy(
        update={"max_num_seqs": n + 1})})
    bigger = plan_serving(load_shape(QWEN), over, card_bytes=card)
    assert not (bigger.fits and bigger.generator.total <= 0.95 * card)  # vLLM's largest share
    args = server_args(fitted, model_path=QWEN, device="cuda", plan=plan)
    assert int(_flag(args, "--max-num-seqs")) == n
    share = float(_flag(args, "--gpu-memory-utilization"))
    assert plan.generator.total <= share * card <= card - plan.other.total


def test_an_eval_that_cannot_fit_is_refused():
    """Not one sequence fits a 4 GB card (3.76 GiB: the bf16 weights and the CUDA context
    alone take 3.95): refused, naming what to change."""
    cfg = server_config(QWEN, max_model_len=2048, max_new_tokens=512, rank=16,
                        concurrency=32, samples=0)
    card, name = card_of(cfg, 4)
    _, plan, refused = server_plan(cfg, QWEN, cuda=True, card_bytes=card, card_name=name)
    assert not plan.fits
    assert "even one sequence of 2048 tokens" in refused and "4 GB card" in refused
    assert "--max-model-len" in refused and "--gpu-gb" in refused


def test_eval_cli_refuses_before_starting_vllm(tiny_model_dir, monkeypatch):
    """On CUDA (stood in for), a card too small for the server: exit 2 and one line naming the
    settings; vLLM is never started."""
    import services.generator.launcher as launcher
    from orchestrator.cli import app

    def no_launch(*a, **k):
        raise AssertionError("vLLM must not start")

    monkeypatch.setattr(launcher, "detect_device", lambda: "cuda")
    monkeypatch.setattr(launcher, "launch", no_launch)
    result = CliRunner().invoke(app, [
        "eval", "--model", str(tiny_model_dir), "--dataset", "arith", "--limit", "2",
        "--max-model-len", "256", "--max-new-tokens", "16", "--gpu-gb", "1"])
    assert result.exit_code == 2, result.output
    assert "--max-model-len" in result.output and "1 GB card" in result.output


@pytest.mark.parametrize("samples", [0, 4])
def test_eval_server_keeps_the_sequences_in_flight(samples):
    cfg = server_config(QWEN, max_model_len=2048, max_new_tokens=512, rank=8,
                        concurrency=16, samples=samples)
    assert cfg.generator.max_num_seqs == 16 * max(samples, 1)
    assert cfg.generator.max_lora_rank == 16  # vLLM's smallest accepted rank over 8 is 16
