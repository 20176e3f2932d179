"""Learner memory, measured next to the memory planner's estimate for the same shape.

    python benchmarks/memory.py --device cpu     # every run: a few-layer model, Qwen2.5 width
    python benchmarks/memory.py --device cuda    # the full 1.5B learner step per GPU profile

CPU: a random-init model with Qwen2.5-Math-1.5B's vocabulary and width and `--layers` blocks,
one learner step (the real `Learner`: LoRA, TIS, chunked or naive log-probs) per variant, each
in a fresh process. The working set is the peak RSS during the step minus the RSS before it
(`/proc/self/clear_refs` resets the peak). The naive variants show the log-prob working set
growing with the micro-batch; the chunked ones must not.

CUDA: a random-init model with Qwen2.5-Math-1.5B's exact configuration, loaded through the
`Learner` with each shipped GPU profile's settings (4-bit NF4 if bitsandbytes imports, else
bf16, printed), at the plan's worst-case shape (prompt = max_model_len - max_new_tokens).
`torch.cuda.max_memory_allocated` over a warm-up and a timed step, completion tokens/s, and the
plan's learner total without the CUDA context (which the allocator does not see) beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.config import RunConfig, load_config  # noqa: E402
from services.memory import GiB, load_model_config  # noqa: E402
from services.memory.plan import learner_side  # noqa: E402
from services.memory.shape import ModelShape  # noqa: E402

QWEN = "Qwen/Qwen2.5-Math-1.5B"
DT = {"float32": "fp32", "bfloat16": "bf16"}
PROFILES = ["qwen2.5-math-1.5b-gsm8k-8gb", "qwen2.5-math-1.5b-gsm8k-12gb",
            "qwen2.5-math-1.5b-gsm8k-16gb"]


def build_random_model(out: Path, *, layers: int | None, dtype: str) -> Path:
    """Qwen2.5-Math-1.5B's config (optionally fewer layers) with random weights, saved."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    if (out / "config.json").exists():
        return out
    cfg = load_model_config(QWEN)
    if layers:
        cfg["num_hidden_layers"] = layers
        cfg["max_window_layers"] = layers
    conf = Qwen2Config(**{k: v for k, v in cfg.items() if k not in ("architectures",)})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(conf, dtype=getattr(torch, dtype))
    model.save_pretrained(out, safe_serialization=True)
    return out


def batch_for(cfg: RunConfig, n_seqs: int, vocab: int, seed: int = 0):
    import random

    from services.schemas import TrainBatch, TrainSequence

    rng = random.Random(seed)
    p = cfg.model.max_model_len - cfg.rollout.max_new_tokens
    c = cfg.rollout.max_new_tokens
    seqs = [TrainSequence(prompt_ids=[rng.randrange(vocab) for _ in range(p)],
                          completion_ids=[rng.randrange(vocab) for _ in range(c)],
                          advantage=1.0 if i % 2 else -1.0,
                          sampler_logprobs=[-12.0] * c)
            for i in range(n_seqs)]
    return TrainBatch(step=0, sequences=seqs)


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _nvidia_smi_used(pid: int) -> int | None:
    """This process's GPU memory as the driver counts it (context + torch's reserved pool)."""
    try:
        res = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in res.stdout.splitlines():
        p, _, used = line.partition(",")
        if p.strip() == str(pid):
            return int(used.strip()) * 2**20
    return None


def logprob_working_set(learner, cfg: RunConfig, shape: ModelShape) -> int:
    """Peak RSS growth of the log-prob computation alone (forward + backward) over hidden states
    of the micro-batch's shape: the real `completion_logprobs` behind a decoder stand-in that
    returns those states, so only the LM head, the log-softmax and their gradients count."""
    from types import SimpleNamespace

    import torch

    from services.learner.logprobs import completion_logprobs

    head = learner.model.get_base_model().get_output_embeddings()
    mb, L = cfg.learner.micro_batch_size, cfg.model.max_model_len
    p = L - cfg.rollout.max_new_tokens
    dtype = next(head.parameters()).dtype
    hidden = torch.randn(mb, L, shape.hidden, dtype=dtype, requires_grad=True)

    class HeadOnly(torch.nn.Module):
        base_model_prefix = "decoder"

        def __init__(self):
            super().__init__()
            self.head = head
            self.decoder = lambda **_: SimpleNamespace(last_hidden_state=hidden)

        def get_output_embeddings(self):
            return self.head

        def forward(self, **_):
            return SimpleNamespace(logits=self.head(hidden))

    ids = torch.randint(0, shape.vocab, (mb, L))
    base = _hwm()
    Path("/proc/self/clear_refs").write_text("5")
    base = _rss()
    lp, mask = completion_logprobs(HeadOnly(), ids, torch.ones_like(ids), [p] * mb, [L] * mb,
                                   temperature=cfg.rollout.temperature,
                                   chunk=cfg.learner.logprob_chunk_tokens)
    (lp * mask).sum().backward()
    return _hwm() - base


# ---------------------------------------------------------------------------- one measurement
def measure(spec: dict) -> dict:
    """Runs in a fresh process: load a Learner for `spec`, time and measure its steps."""
    import torch

    from services.learner.learner import Learner

    cfg = RunConfig.model_validate(spec["config"])
    shape = ModelShape.from_config(json.loads((Path(spec["model"]) / "config.json").read_text()))
    cuda = cfg.learner.device == "cuda"
    run_dir = tempfile.mkdtemp(prefix="mathrl-membench-")
    learner = Learner(cfg, model_path=spec["model"], run_dir=run_dir)
    batch = batch_for(cfg, spec["sequences"], shape.vocab)
    n_tokens = sum(len(s.completion_ids) for s in batch.sequences)
    out: dict = {"name": spec["name"]}
    if cuda:
        torch.cuda.synchronize()
        out["resident_allocated"] = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        # Weights load memory-mapped: fault every page in now, or the step's peak would count
        # the first touch of the embedding as working set.
        with torch.no_grad():
            for prm in learner.model.parameters():
                prm.float().sum()
        rss0 = _rss()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        out["resident_rss"] = rss0
    times = []
    for _ in range(spec["steps"]):
        t0 = time.perf_counter()
        learner.train_step(batch)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if cuda:
        free, total = torch.cuda.mem_get_info()
        out["peak_allocated"] = torch.cuda.max_memory_allocated()
        out["peak_reserved"] = torch.cuda.max_memory_reserved()
        # What the process holds outside torch's allocator: the CUDA context and libraries.
        out["context"] = (total - free) - torch.cuda.memory_reserved()
        out["process_used"] = _nvidia_smi_used(os.getpid())
        out["bnb_4bit"] = cfg.learner.load_in_4bit
    else:
        out["step_working_set"] = _hwm() - out["resident_rss"]
        learner.model.zero_grad(set_to_none=True)
        out["logprob_working_set"] = logprob_working_set(learner, cfg, shape)
    out["step_s"] = times[-1]
    out["tokens_per_s"] = n_tokens / times[-1]
    side = learner_side(shape, cfg, cuda=cuda)
    out["plan"] = dict(side.components)
    return out


def run_child(spec: dict) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    res = subprocess.run([sys.executable, __file__, "--child", f.name], capture_output=True,
                         text=True, cwd=ROOT)
    os.unlink(f.name)
    if res.returncode != 0:
        return {"name": spec["name"], "error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- CPU
def cpu_specs(model: Path, layers: int, micro_batches: list[int]) -> list[dict]:
    base = load_config(ROOT / "configs" / "qwen2.5-math-1.5b-gsm8k-12gb.toml").model_dump()
    base["model"].update(name_or_path=str(model), dtype="float32", max_model_len=712)
    base["learner"].update(device="cpu", load_in_4bit=False, optimizer="adamw",
                           num_threads=os.cpu_count())
    specs = []
    for dtype in ("float32", "bfloat16"):
        for chunk in (0, 128):
            for mb in micro_batches:
                if dtype == "bfloat16" and mb != 2:
                    continue  # the head dtype is compared at the profile's micro-batch only
                cfg = json.loads(json.dumps(base))
                cfg["model"]["dtype"] = dtype
                cfg["learner"].update(micro_batch_size=mb, logprob_chunk_tokens=chunk)
                name = f"{'naive' if chunk == 0 else 'chunked'} {DT[dtype]} mb={mb}"
                specs.append({"name": name, "config": cfg, "model": str(model),
                              "sequences": mb, "steps": 1, "layers": layers})
    return specs


def print_table(results: list[dict], header: str, row) -> None:
    """One line per result (`row(result)`), failed children shown with their error."""
    print("\n" + header)
    for r in results:
        print(f"{r['name']:<20} error: {r['error']}" if "error" in r else row(r))


def cpu_row(r: dict) -> str:
    p = r["plan"]
    step_plan = p["activations"] + p["logprobs"]
    return (f"{r['name']:<20}{r['step_working_set'] / 2**20:>9.0f}{step_plan / 2**20:>9.0f}"
            f"{r['logprob_working_set'] / 2**20:>9.0f}{p['logprobs'] / 2**20:>14.0f}"
            f"{r['step_s']:>6.1f}")


CPU_HEADER = (f"{'variant':<20}{'step MB':>9}{'plan MB':>9}{'logp MB':>9}{'plan logp MB':>14}"
              f"{'s':>6}")


# ---------------------------------------------------------------------------- CUDA
def cuda_specs(model: Path, profiles: list[str], sequences: int, steps: int,
               cap: bool = False) -> list[dict]:
    try:
        import bitsandbytes  # noqa: F401

        bnb = True
    except Exception:  # noqa: BLE001 - any import failure means: no 4-bit here
        bnb = False
    specs = []
    for prof in profiles:
        path = ROOT / "configs" / f"{prof}.toml"
        if not path.exists():
            continue
        variants = [("", {})]
        if prof.endswith("12gb"):  # how the step grows with the micro-batch, and naive logits
            variants += [(" mb=2", {"micro_batch_size": 2}), (" mb=8", {"micro_batch_size": 8}),
                         (" naive", {"logprob_chunk_tokens": 0}),
                         (" naive mb=2", {"logprob_chunk_tokens": 0, "micro_batch_size": 2})]
        for suffix, extra in variants:
            cfg = load_config(path).model_dump()
            cfg["model"]["name_or_path"] = str(model)
            cfg["learner"].update(device="cuda", cap_cuda_memory=cap, **extra)
            if not bnb:
                cfg["learner"].update(load_in_4bit=False, optimizer="adamw")
            specs.append({"name": prof.split("-")[-1] + suffix, "config": cfg,
                          "model": str(model), "sequences": sequences, "steps": steps})
    return specs


def cuda_row(r: dict) -> str:
    plan = sum(r["plan"].values()) - r["plan"]["context"]
    return (f"{r['name']:<12}{'yes' if r['bnb_4bit'] else 'no':>5}"
            f"{r['resident_allocated'] / GiB:>10.2f}{r['peak_allocated'] / GiB:>11.2f}"
            f"{plan / GiB:>10.2f}{r['peak_allocated'] / plan:>7.2f}"
            f"{r['peak_reserved'] / GiB:>10.2f}{r['context'] / GiB:>9.2f}"
            f"{r['tokens_per_s']:>8.0f}")


CUDA_HEADER = (f"{'profile':<12}{'4bit':>5}{'resident':>10}{'peak alloc':>11}{'plan-ctx':>10}"
               f"{'ratio':>7}{'reserved':>10}{'context':>9}{'tok/s':>8}  (GiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--layers", type=int, default=2, help="CPU: decoder blocks")
    ap.add_argument("--micro-batches", default="1,2,4", help="CPU: micro-batch sizes")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--sequences", type=int, default=8, help="CUDA: sequences per step")
    ap.add_argument("--steps", type=int, default=2, help="CUDA: steps (the last is timed)")
    ap.add_argument("--work", default=str(ROOT / ".mathrl" / "membench"))
    ap.add_argument("--cap", action="store_true",
                    help="CUDA: keep learner.cap_cuda_memory on (the plan's cap is enforced)")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(measure(json.loads(Path(a.child).read_text()))))
        return
    work = Path(a.work)
    if a.device == "cpu":
        model = build_random_model(work / f"qwen-width-{a.layers}l", layers=a.layers,
                                   dtype="float32")
        specs = cpu_specs(model, a.layers, [int(x) for x in a.micro_batches.split(",")])
        header, row = CPU_HEADER, cpu_row
    else:
        model = build_random_model(work / "qwen-1.5b-random", layers=None, dtype="bfloat16")
        specs = cuda_specs(model, a.profiles.split(","), a.sequences, a.steps, a.cap)
        header, row = CUDA_HEADER, cuda_row
    results = []
    for spec in specs:
        results.append(run_child(spec))
        print(json.dumps(results[-1]), flush=True)
    print_table(results, header, row)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
