"""Helpers of benchmarks/vs_trl.py: a config as TOML, and the printed comparison table."""

from __future__ import annotations

import json
from collections import defaultdict

GiB = 2**30
ROWS = (  # (key in the side's medians, label, format)
    ("time/step", "step time, median (s)", "{:.1f}"),
    ("time/generate", "  generate (s)", "{:.1f}"),
    ("time/reward", "  reward (s)", "{:.2f}"),
    ("time/learn", "  learn (s)", "{:.1f}"),
    ("time/save", "  save (s)", "{:.2f}"),
    ("time/sync", "  sync (s)", "{:.2f}"),
    ("perf/learner_tokens_per_s", "learner tokens/s", "{:.0f}"),
    ("completion/mean_tokens", "completion tokens, mean", "{:.1f}"),
)


def to_toml(data: dict, prefix: str = "") -> str:
    """A nested dict of plain values (a pydantic `model_dump(mode="json")`) as TOML; None
    values are left out (the field's default is None then). JSON's string, number, boolean and
    array forms are valid TOML values."""
    lines, tables = [], []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            raise ValueError(f"{prefix}{key}: arrays of tables are not supported")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    for key, value in tables:
        lines.append(f"\n[{prefix}{key}]")
        lines.append(to_toml(value, f"{prefix}{key}.").rstrip("\n"))
    return "\n".join(line for line in lines if line) + "\n"


def by_name(processes: list[dict], min_bytes: int = 50 * 2**20) -> str:
    """`VLLM::EngineCore 2.71, vllm api_server 0.52, ray::IDLE x3 0.41` (GiB; sum of each
    process's own peak, so the parts may add up to more than the tree's peak)."""
    total: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for p in processes:
        total[p["name"]] += p["peak_pss"]
        count[p["name"]] += 1
    parts = [f"{name}{f' x{count[name]}' if count[name] > 1 else ''} {b / GiB:.2f}"
             for name, b in sorted(total.items(), key=lambda kv: -kv[1]) if b >= min_bytes]
    return ", ".join(parts) or "-"


def _cell(side: dict | None, key: str, spec: str) -> str:
    if side is None or key not in side["median"]:
        return "-"
    return spec.format(side["median"][key])


def _ratio(a: float | None, b: float | None) -> str:
    return f"{b / a:.2f}" if a and b is not None else "-"


def print_report(result: dict) -> None:
    trl, ours = result.get("trl"), result.get("mathrl")
    cfg = result["config"]
    ro = cfg["rollout"]
    over = (ours or trl or {}).get("median_over_steps", [])
    print(f"\nvs TRL, {result['date']}: SmolLM2-135M-Instruct, {ro['prompts_per_step']} prompts x "
          f"{ro['group_size']} x <={ro['max_new_tokens']} tokens, LoRA r{cfg['lora']['rank']} "
          f"all linear, {cfg['schedule']['steps']} steps; medians over steps {over} "
          f"(load average before/after: {result['machine']['loadavg_before'][0]:.1f} / "
          f"{result['machine']['loadavg_after'][0]:.1f} on {result['machine']['cpus']} CPUs)")
    print(f"{'':28}{'TRL':>10}{'mathrl':>10}{'mathrl/TRL':>12}")
    for key, label, spec in ROWS:
        a = trl["median"].get(key) if trl else None
        b = ours["median"].get(key) if ours else None
        if a is None and b is None:
            continue
        print(f"{label:28}{_cell(trl, key, spec):>10}{_cell(ours, key, spec):>10}"
              f"{_ratio(a, b):>12}")
    peaks = [s["memory"]["peak_pss"] / GiB if s else None for s in (trl, ours)]
    print(f"{'peak PSS, process tree (GiB)':28}"
          + "".join(f"{(f'{x:.2f}' if x is not None else '-'):>10}" for x in peaks)
          + f"{_ratio(*peaks):>12}")
    walls = [s["wall_s"] if s else None for s in (trl, ours)]
    print(f"{'whole run, wall (s)':28}"
          + "".join(f"{(f'{x:.0f}' if x is not None else '-'):>10}" for x in walls)
          + f"{_ratio(*walls):>12}")

    print("\nreward/mean (accuracy) per step")
    print(f"{'step':>4}  {'TRL':>16}  {'mathrl':>16}")
    n = max(len(s["steps"]) if s else 0 for s in (trl, ours))
    for i in range(n):
        cells = []
        for side in (trl, ours):
            row = side["steps"][i] if side and i < len(side["steps"]) else None
            cells.append(f"{row['reward/mean']:.3f} ({row['reward/accuracy']:.0%})" if row
                         else "-")
        print(f"{i + 1:>4}  {cells[0]:>16}  {cells[1]:>16}")

    print("\npeak PSS per process (GiB, >= 50 MiB)")
    for name, side in (("TRL", trl), ("mathrl", ours)):
        if side:
            print(f"  {name}: {by_name(side['memory']['processes'])}")
    if trl and "settings" in trl:
        print(f"\nTRL {trl['versions']['trl']}: "
              + " ".join(f"{k}={v}" for k, v in trl["settings"].items()))
