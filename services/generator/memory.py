"""Memory of a launched generator: the PSS summed over its process group.

vLLM's CPU engine grows by a few MiB a minute while it generates (docs/benchmarks.md, 150
steps and `benchmarks/generator_soak.py`); a night-long run bounds it by restarting the
server between steps (generator.recycle_above_gib). PSS, not RSS: the API server and the
engine core map the same libraries, and RSS would count them once per process. The server is
started in its own session, so its process group is exactly the processes it forked.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def parse_pss(smaps_rollup: str) -> int:
    """Bytes of the `Pss:` line of a `/proc/PID/smaps_rollup` text (0 if there is none)."""
    for line in smaps_rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024  # the kernel writes kB
    return 0


def parse_pgrp(stat: str) -> int:
    """The process group (field 5) of a `/proc/PID/stat` line; the command name in field 2
    is in parentheses and may hold spaces and ')', so fields are counted after the last ')'."""
    return int(stat[stat.rindex(")") + 2:].split()[2])


def process_group_pss(pgid: int, proc: Path = PROC) -> int:
    """Sum of PSS over the live processes of group `pgid` (bytes; 0 if none is left)."""
    total = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if parse_pgrp((entry / "stat").read_text()) != pgid:
                continue
            total += parse_pss((entry / "smaps_rollup").read_text())
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked, or is not ours to read
    return total
