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


def batch_for(cfg: RunConfig, n_seqs: int, vocab: int, seed: int = 0, *,
              group: int | None = None, mix: bool = False, completion: int | None = None):
    """`n_seqs` sequences in groups of `group` (default: the config's group size) that share
    a prompt, as a real step's do. Worst case (default): every prompt `max_model_len -
    max_new_tokens` long and every completion `max_new_tokens`. `mix`: GSM8K-like instead,
    prompts 180..300 tokens, completions uniform in 64..`max_new_tokens`."""
    import random

    from services.schemas import TrainBatch, TrainSequence

    rng = random.Random(seed)
    group = group or cfg.rollout.group_size
    c_max = cfg.rollout.max_new_tokens
    seqs = []
    for i in range(n_seqs):
        if i % group == 0:
            p = rng.randint(180, 300) if mix else cfg.model.max_model_len - c_max
            prompt = [rng.randrange(vocab) for _ in range(p)]
        c = rng.randint(64, c_max) if mix else completion or c_max
        seqs.append(TrainSequence(prompt_ids=prompt,
                                  completion_ids=[rng.randrange(vocab) for _ in range(c)],
                                  advantage=1.0 if i % 2 else -1.0,
                                  sampler_logprobs=[-12.0] * c))
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
    batch = batch_for(cfg, spec["sequences"], shape.vocab, group=spec.get("group"),
                      mix=spec.get("mix", False), completion=spec.get("completion"))
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
        metrics = learner.train_step(batch).metrics
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0 - metrics["time/save"])
    if cuda:
        free, total = torch.cuda.mem_get_info()
        out["peak_allocated"] = torch.cuda.max_memory_allocated()
        out["peak_reserved"] = torch.cuda.max_memory_reserved()
        # What the process holds outside torch's allocator: the CUDA context and libraries.
        out["context"] = (total - free) - torch.cuda.memory_reserved()
        out["process_used"] = _nvidia_smi_used(os.getpid())
        out["bnb_4bit"] = cfg.learner.load_in_4bit
        if spec.get("profile"):
            try:
                out.update(gpu_busy(learner, batch))
            except Exception as e:  # noqa: BLE001 - the memory figures stand without the profile
                out["profile_error"] = repr(e)[:300]
    else:
        out["step_working_set"] = _hwm() - out["resident_rss"]
        learner.model.zero_grad(set_to_none=True)
        out["logprob_working_set"] = logprob_working_set(learner, cfg, shape)
    out["step_s"] = times[-1]
    out["positions"] = metrics["perf/learner_positions"]
    out["padding"] = metrics["perf/padding_share"]
    out["tokens_per_s"] = n_tokens / times[-1]
    side = learner_side(shape, cfg, cuda=cuda)
    out["plan"] = dict(side.components)
    return out


def gpu_busy(learner, batch) -> dict:
    """One more step under torch's profiler: the share of its wall time that CUDA kernels ran
    (profiling slows the host side, so this is a lower bound) and where the time went."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        learner.train_step(batch)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    kernels = sorted((e for e in events if e.device_type == DeviceType.CUDA),
                     key=lambda e: -e.device_time_total)
    busy = sum(e.device_time_total for e in kernels) / 1e6
    launches = sum(e.count for e in kernels)
    top_cpu = sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]
    return {"profiled_wall_s": wall, "kernel_s": busy, "gpu_busy": busy / wall,
            "kernel_launches": launches,
            "top_kernels": [(e.key[:60], round(e.device_time_total / 1e6, 3), e.count)
                            for e in kernels[:6]],
            "top_cpu_ops": [(e.key[:60], round(e.self_cpu_time_total / 1e6, 3), e.count)
                            for e in top_cpu]}


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
    # One row per sequence in fixed micro-batches: the variants differ in the micro-batch only.
    base["learner"].update(device="cpu", load_in_4bit=False, optimizer="adamw",
                           shared_prompt=False, micro_batch_tokens=None,
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
                              "sequences": mb, "group": 1, "steps": 1, "layers": layers})
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
PROFILED = ("", " mix", " mix per-seq mb=4")
"""12gb variants whose extra step runs under torch's profiler (`gpu_busy`)."""


def fill_shape(cfg: RunConfig) -> tuple[int, int | None]:
    """(sequences, completion length) of the batch that fills one micro-batch: with a token
    budget, rows of whole groups as wide as fit `ceil(budget / widest group)` times into it;
    else (`micro_batch_size`, the longest completion)."""
    lc, ro = cfg.learner, cfg.rollout
    if lc.micro_batch_tokens is None:
        return lc.micro_batch_size, None
    p = cfg.model.max_model_len - ro.max_new_tokens
    rows = -(-lc.micro_batch_tokens // (p + ro.group_size * ro.max_new_tokens))
    width = lc.micro_batch_tokens // rows
    return rows * ro.group_size, max(1, min(ro.max_new_tokens, (width - p) // ro.group_size))


def cuda_specs(model: Path, profiles: list[str], sequences: int, steps: int,
               cap: bool = False, mix: int = 64, only: list[str] | None = None) -> list[dict]:
    """Each profile at the plan's worst-case shape (`sequences` sequences, one group per
    `rollout.group_size`, or with a token budget the batch that fills it); for the 12gb
    profile also other micro-batches and the per-sequence pass; and with `mix` > 0, `mix`
    GSM8K-like sequences per step through the shared-prompt and the per-sequence pass of the
    12gb and 16gb profiles (the learner's tokens/s). `only`: these variant names."""
    try:
        import bitsandbytes  # noqa: F401

        bnb = True
    except Exception:  # noqa: BLE001 - any import failure means: no 4-bit here
        bnb = False
    per_seq = {"shared_prompt": False, "micro_batch_tokens": None, "micro_batch_size": 4}
    mb4 = {"micro_batch_tokens": None, "micro_batch_size": 4}
    specs = []
    for prof in profiles:
        path = ROOT / "configs" / f"{prof}.toml"
        if not path.exists():
            continue
        variants = [("", {}, False)]
        if prof.endswith("12gb"):  # the shared pass in fixed micro-batches, and per sequence
            variants += [(" mb=4", mb4, False), (" per-seq mb=4", per_seq, False)]
        if mix:
            variants += [(" mix", {}, True), (" mix per-seq mb=4", per_seq, True)]
            if prof.endswith("12gb"):
                variants += [(" mix mb=4", mb4, True)]
        for suffix, extra, mixed in variants:
            name = prof.split("-")[-1] + suffix
            if only and name not in only:
                continue
            cfg = load_config(path).model_dump()
            cfg["model"]["name_or_path"] = str(model)
            cfg["learner"].update(device="cuda", cap_cuda_memory=cap, **extra)
            if not bnb:
                cfg["learner"].update(load_in_4bit=False, optimizer="adamw")
            n, completion = fill_shape(RunConfig.model_validate(cfg))
            specs.append({"name": name, "config": cfg, "mix": mixed, "model": str(model),
                          "sequences": mix if mixed else max(n, sequences),
                          "completion": None if mixed else completion, "steps": steps,
                          "profile": prof.endswith("12gb") and suffix in PROFILED})
    return specs


def cuda_row(r: dict) -> str:
    plan = sum(r["plan"].values()) - r["plan"]["context"]
    return (f"{r['name']:<17}{'yes' if r['bnb_4bit'] else 'no':>5}"
            f"{r['resident_allocated'] / GiB:>10.2f}{r['peak_allocated'] / GiB:>11.2f}"
            f"{plan / GiB:>10.2f}{r['peak_allocated'] / plan:>7.2f}"
            f"{r['peak_reserved'] / GiB:>10.2f}{r['context'] / GiB:>9.2f}"
            f"{r['tokens_per_s']:>8.0f}{r['step_s']:>7.2f}{r['positions']:>8.0f}"
            f"{r['padding']:>6.1%}{r.get('gpu_busy', float('nan')):>6.0%}")


CUDA_HEADER = (f"{'profile':<17}{'4bit':>5}{'resident':>10}{'peak alloc':>11}{'plan-ctx':>10}"
               f"{'ratio':>7}{'reserved':>10}{'context':>9}{'tok/s':>8}{'step s':>7}"
               f"{'posns':>8}{'pad':>6}{'busy':>6}  (GiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--layers", type=int, default=2, help="CPU: decoder blocks")
    ap.add_argument("--micro-batches", default="1,2,4", help="CPU: micro-batch sizes")
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--sequences", type=int, default=8, help="CUDA: sequences per step")
    ap.add_argument("--steps", type=int, default=2, help="CUDA: steps (the last is timed)")
    ap.add_argument("--mix", type=int, default=64,
                    help="CUDA: sequences of the GSM8K-like tokens/s variants (0: none)")
    ap.add_argument("--work", default=str(ROOT / ".mathrl" / "membench"))
    ap.add_argument("--cap", action="store_true",
                    help="CUDA: keep learner.cap_cuda_memory on (the plan's cap is enforced)")
    ap.add_argument("--only", help="CUDA: comma-separated variant names (default: all)")
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
        specs = cuda_specs(model, a.profiles.split(","), a.sequences, a.steps, a.cap,
                           a.mix, a.only.split(",") if a.only else None)
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
