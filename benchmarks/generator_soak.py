"""The vLLM server's memory over many rounds of generate + weight reload (the CPU demo's path).

    python benchmarks/generator_soak.py [--rounds 100] [--no-reload] [--env KEY=VALUE ...]

Serves a copy of the demo config's model (SmolLM2-135M-Instruct, configs/smollm2-arith-cpu.toml)
with the launcher's own flags and environment (plus `--env`, e.g. glibc `MALLOC_*` settings),
then each round samples 8 prompts x 8 completions as a training step does and, unless
`--no-reload`, has vLLM re-read its weights and reset its prefix cache (what merged sync does
after every learner step). Prints the server's PSS per process every `--every` rounds and its
growth from round `--every` on: a long `mathrl train` showed the engine core growing while
the learner stayed flat, and this isolates the generator from the rest of the loop.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from proctree import ProcTreeSampler  # noqa: E402
from vs_trl import free_port  # noqa: E402

MiB = 1 << 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--every", type=int, default=10, help="rounds between printed samples")
    ap.add_argument("--no-reload", action="store_true", help="generate only")
    ap.add_argument("--env", nargs="*", default=[], help="KEY=VALUE for the server, on top")
    a = ap.parse_args()

    from transformers import AutoTokenizer

    from services.config import load_config
    from services.data import arithmetic_problems, render_prompt
    from services.generator.client import GeneratorClient
    from services.generator.launcher import VLLMServer, server_args, server_env
    from services.learner.export import prepare_served_model
    from services.learner.model import torch_dtype
    from services.schemas import GenerateRequest
    from services.smollm2 import ensure_smollm2

    home = ROOT / ".mathrl"
    model = ensure_smollm2(home / "models" / "smollm2-135m-instruct", home / "cache")
    cfg = load_config(ROOT / "configs" / "smollm2-arith-cpu.toml")
    data = cfg.model_dump()
    data["generator"]["port"] = free_port()
    cfg = type(cfg).model_validate(data)
    work = Path(tempfile.mkdtemp(prefix="mathrl-gensoak-"))
    served = prepare_served_model(str(model), work / "served", torch_dtype(cfg.model, "cpu"))
    extra = dict(kv.split("=", 1) for kv in a.env)
    gen = cfg.generator
    server = VLLMServer(str(served), server_args(cfg, model_path=str(served), device="cpu"),
                        {**server_env(gen, device="cpu"), **extra},
                        log_path=work / "server.log", host=gen.host, port=gen.port)
    tok = AutoTokenizer.from_pretrained(model)
    ro = cfg.rollout
    problems = arithmetic_problems(ro.prompts_per_step * a.rounds, seed=0)
    prompts = [render_prompt(tok, p.question, instruction=cfg.data.instruction,
                             system=cfg.data.system_prompt) for p in problems]
    rows: list[tuple[int, float, dict[str, int]]] = []
    server.start()
    try:
        server.wait_ready(gen.startup_timeout_s)
        tree = ProcTreeSampler(server.proc.pid, root_name="vllm api_server")
        with GeneratorClient(f"http://{gen.host}:{gen.port}") as client:
            t0 = time.perf_counter()
            for r in range(1, a.rounds + 1):
                batch = prompts[(r - 1) * ro.prompts_per_step:r * ro.prompts_per_step]
                client.generate(GenerateRequest(
                    model=gen.alias, prompts=batch, n=ro.group_size,
                    max_tokens=ro.max_new_tokens, temperature=ro.temperature))
                if not a.no_reload:
                    client.reload_weights()
                if r == 1 or r % a.every == 0:
                    tree.sample()
                    rows.append((r, time.perf_counter() - t0, tree.current()))
    except BaseException:
        server.stop()
        print(f"server failed; its log: {work / 'server.log'}", file=sys.stderr)
        raise
    server.stop()
    shutil.rmtree(work, ignore_errors=True)

    names = sorted({n for _, _, cur in rows for n in cur if cur[n] >= 50 * MiB},
                   key=lambda n: -rows[-1][2].get(n, 0))
    print(f"\n{a.rounds} rounds of {ro.prompts_per_step} x {ro.group_size} completions"
          f"{'' if a.no_reload else ' + reload_weights'}; env {extra or 'as launched'}")
    print(f"{'round':>6} {'s':>6} {'total MiB':>10} " + " ".join(f"{n[:18]:>18}" for n in names))
    for r, t, cur in rows:
        print(f"{r:6d} {t:6.0f} {sum(cur.values()) / MiB:10.0f} "
              + " ".join(f"{cur.get(n, 0) / MiB:18.0f}" for n in names))
    base = next((cur for r, _, cur in rows if r == a.every), rows[0][2])
    last = rows[-1][2]
    grew = (sum(last.values()) - sum(base.values())) / MiB
    span = rows[-1][0] - a.every
    print(f"growth from round {a.every}: {grew:+.0f} MiB over {span} rounds "
          f"({grew / max(span, 1):+.2f} MiB a round)")


if __name__ == "__main__":
    main()
