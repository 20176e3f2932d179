"""Launch vLLM's own OpenAI-compatible server as a child process, wait for it, stop it by PID.

We never wrap or re-implement the server: the config is turned into `vllm serve` arguments
and environment variables (`server_args` / `server_env`, pure functions that the compose
file is checked against), and the process is started in its own session so that stopping it
takes down exactly the processes we started, never anything matched by name.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from services.config import GeneratorConfig, RunConfig
from services.dtypes import resolve_dtype

if TYPE_CHECKING:
    from services.memory import MemoryPlan


MAX_SHARE = 0.95
"""The largest `--gpu-memory-utilization` passed (as `generator.gpu_memory_utilization`'s bound)."""


class GeneratorError(RuntimeError):
    """The generator could not start or answer; the message quotes its log tail."""


def _planned_kv_bytes(cfg: RunConfig, model_path: str) -> int | None:
    """The KV cache one step needs (services/memory), or None without a config to plan from."""
    from services.memory import load_shape
    from services.memory import plan as mplan

    try:
        return mplan.kv_cache_bytes(load_shape(model_path), cfg, cuda=False)
    except FileNotFoundError:
        return None


def memory_args(cfg: RunConfig, *, model_path: str, device: str,
                plan: MemoryPlan | None = None) -> list[str]:
    """The flags that size vLLM, from the run's memory plan (services/memory), or from `plan`
    when the caller made its own (`mathrl eval`: vLLM alone on the card).

    `--max-num-seqs`: a step never has more than prompts x G sequences in flight, and vLLM's
    default (256) would profile a 256 x vocab fp32 sampler batch. `--logprobs-mode
    processed_logprobs`: the sampler's log-probs of the temperature-scaled distribution, the
    one the learner scores (the default is taken before temperature). On CUDA: the KV cache
    the plan sized for one step (`--kv-cache-memory-bytes`; vLLM then skips its own sizing),
    the start-up check's share of the card, and the engine-step token budget. CUDA graphs
    keep vLLM 0.32's defaults, which the plan counts (`plan.graph_captures`).
    """
    from services.memory import plan as mplan

    gen = cfg.generator
    args = ["--max-num-seqs", str(mplan.max_num_seqs(cfg)),
            "--logprobs-mode", "processed_logprobs"]
    if device != "cuda":
        if gen.cpu_kvcache_space_gib is None:
            kv = (plan.generator.components["kv_cache"] if plan is not None
                  else _planned_kv_bytes(cfg, model_path))
            if kv is not None:
                args += ["--kv-cache-memory-bytes", str(kv)]
        return args
    args += ["--max-num-batched-tokens", str(gen.max_num_batched_tokens)]
    share = gen.gpu_memory_utilization
    if gen.kv_cache == "plan":
        from services.memory import load_shape

        if plan is None:
            try:
                plan = mplan.plan_run(load_shape(model_path), cfg)
            except FileNotFoundError:
                pass  # no config.json to plan from: let vLLM size the cache itself
        if plan is not None:
            args += ["--kv-cache-memory-bytes", str(plan.generator.components["kv_cache"])]
            # vLLM refuses to start unless this share of the card is free; it sizes nothing
            # else from it once the KV cache is given.
            share = min(MAX_SHARE, math.ceil(100 * plan.generator.total / plan.card_bytes) / 100)
    args += ["--gpu-memory-utilization", str(share)]
    if gen.sleep_mode:
        args.append("--enable-sleep-mode")
    return args


def server_args(cfg: RunConfig, *, model_path: str, device: str,
                plan: MemoryPlan | None = None) -> list[str]:
    """The `vllm serve` flags for this config (without the executable and model); `plan`: the
    memory plan to size vLLM from instead of the run's (see `memory_args`)."""
    gen, model, lora = cfg.generator, cfg.model, cfg.lora
    args = [
        "--host", gen.host,
        "--port", str(gen.port),
        "--dtype", resolve_dtype(model.dtype, device),
        "--max-model-len", str(model.max_model_len),
        "--seed", str(cfg.schedule.seed),
    ]
    if gen.sync_mode == "lora":
        args += [
            "--enable-lora",
            "--max-lora-rank", str(max(gen.max_lora_rank, lora.rank)),
            "--max-loras", str(gen.max_loras),
        ]
    else:
        # Merged mode serves the policy itself under the stable alias.
        args += ["--served-model-name", gen.alias]
    args += memory_args(cfg, model_path=model_path, device=device, plan=plan)
    if gen.enforce_eager:
        args.append("--enforce-eager")
    if not gen.enable_prefix_caching:
        args.append("--no-enable-prefix-caching")
    return args + list(gen.extra_args)


def server_env(gen: GeneratorConfig, *, device: str, cpu_count: int | None = None,
               api_key: str | None = None) -> dict[str, str]:
    """Environment variables the server needs on top of the parent's. `api_key` goes in
    `VLLM_API_KEY`, not `--api-key`: a command line is readable by every local user."""
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    if api_key:
        env["VLLM_API_KEY"] = api_key
    if gen.sync_mode == "merged" or (gen.sleep_mode and device == "cuda"):
        # /collective_rpc (reload_weights), /reset_prefix_cache, /sleep and /wake_up exist only
        # in dev mode.
        env["VLLM_SERVER_DEV_MODE"] = "1"
    if device != "cuda":
        if gen.cpu_kvcache_space_gib is not None:
            # (None: `memory_args` passes the planned size; this variable would override it.)
            env["VLLM_CPU_KVCACHE_SPACE"] = str(gen.cpu_kvcache_space_gib)
        bind = gen.cpu_threads_bind
        if bind == "auto":
            n = cpu_count or os.cpu_count() or 1
            bind = f"0-{n - 1}" if n > 1 else "0"
        # The worker runs inside the engine-core process instead of a process of its own:
        # one torch runtime less (SmolLM2 server: 3.16 -> 2.67 GiB PSS, same tokens, same
        # speed, measured). vLLM still keeps the API server and the engine core apart.
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = bind
            # By default vLLM-cpu keeps one core for itself; we alternate generation and
            # learning, so the generator may use every core while it runs.
            env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    return env


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM the server when its parent dies,
    so a killed orchestrator never leaves a vLLM server holding the port and the GPU. The
    server sits in its own session (a terminal's Ctrl-C reaches only us, and we stop it in
    order), so this is the backstop for when we cannot."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-spawner")
"""One long-lived thread that forks every server (see VLLMServer.start)."""


def detect_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


def cuda_total_bytes() -> int | None:
    """GPU 0's total as CUDA reports it (what `--gpu-memory-utilization` is a share of), read
    in a child process so that this one holds no CUDA context while vLLM starts; None when it
    cannot be read."""
    code = "import torch; print(torch.cuda.get_device_properties(0).total_memory)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, check=True)
        return int(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class VLLMServer:
    """One `vllm serve` child process (the `vllm serve` console script is broken for the
    `vllm-cpu` distribution, so we run the same entry point as a module)."""

    def __init__(self, model_path: str, args: list[str], env: dict[str, str], *, log_path: Path,
                 host: str, port: int):
        self.model_path = model_path
        self.args = args
        self.env = env
        self.log_path = Path(log_path)
        self.url = f"http://{host}:{port}"
        self.proc: subprocess.Popen | None = None
        self.watchdog: subprocess.Popen | None = None
        """The process that stops the server's group if this one dies first (watchdog.py)."""

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--model", self.model_path, *self.args]

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        # Forked from the spawner thread: PR_SET_PDEATHSIG fires when the *thread* that forked
        # the child exits, and a restart comes from a run's scheduler thread, which ends with
        # the run; the spawner lives as long as this process.
        self.proc = _SPAWNER.submit(
            subprocess.Popen, self.argv, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env={**os.environ, **self.env}, start_new_session=True,
            preexec_fn=_die_with_parent,
        ).result()
        log.close()
        # PR_SET_PDEATHSIG reaches the server only, not its engine: a watchdog stops the whole
        # group if we die first (services/generator/watchdog.py). Its own session, outside the
        # group: Ctrl-C in a terminal does not reach it, and the group's memory
        # (process_group_pss) is the server's alone.
        self.watchdog = subprocess.Popen(
            [sys.executable, "-m", "services.generator.watchdog", str(os.getpid()),
             str(self.proc.pid), "10"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def log_tail(self, n_lines: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n_lines:])

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise GeneratorError(
                    f"vLLM server exited with code {self.proc.returncode} before it was ready; "
                    f"log tail ({self.log_path}):\n{self.log_tail()}"
                )
            key = self.env.get("VLLM_API_KEY")
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2.0,
                             headers=headers).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise GeneratorError(
            f"vLLM server not ready after {timeout_s:.0f} s; log tail ({self.log_path}):\n"
            f"{self.log_tail()}"
        )

    def restart(self, timeout_s: float) -> None:
        """Stop the whole process group (dead or hung), start again, wait until it answers.
        A start that does not answer in time is stopped too: a half-started server would hold
        the port (and the card) that the next try needs."""
        self.stop(grace_s=10)
        self.start()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop(grace_s=10)
            raise

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM our process group (the server and the engine processes it forked).

        Also when the server itself is already dead: its EngineCore and workers outlive a
        killed API server (2.7 GB held, measured) and are still in its process group."""
        if self.proc is None:
            return
        self._stop_watchdog()
        pgid = self.proc.pid  # start_new_session made the child its own group leader
        if self.proc.poll() is not None:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        # Engine workers may outlive the leader briefly; reap the rest of the group.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _stop_watchdog(self) -> None:
        """We stop the group ourselves: the watchdog is not needed (and is reaped here)."""
        if self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.wait(timeout=10)
            self.watchdog = None


def launch(cfg: RunConfig, *, model_path: str, log_path: Path,
           device: str | None = None, api_key: str | None = None,
           plan: MemoryPlan | None = None) -> VLLMServer:
    """Start a server for this config and block until it answers (or raise GeneratorError).
    `api_key`: the key its `/v1` routes then require; `plan`: see `memory_args`."""
    device = device or detect_device()
    gen = cfg.generator
    server = VLLMServer(
        model_path,
        server_args(cfg, model_path=model_path, device=device, plan=plan),
        server_env(gen, device=device, api_key=api_key),
        log_path=log_path, host=gen.host, port=gen.port,
    )
    server.start()
    try:
        server.wait_ready(gen.startup_timeout_s)
    except BaseException:
        server.stop()
        raise
    return server
