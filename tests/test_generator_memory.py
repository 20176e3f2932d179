"""The generator's memory as the recycling bound reads it (services/generator/memory.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from services.generator.memory import parse_pgrp, parse_pss, process_group_pss


def test_parse_pgrp_after_a_command_name_with_spaces_and_parens():
    stat = "4242 (vllm (engine) x) S 1 4200 4200 0 -1 4194560 100 0 0 0"
    assert parse_pgrp(stat) == 4200


def test_parse_pss_reads_kb():
    text = "55d1-7ffd ---p 00000000 00:00 0 [rollup]\nRss: 2048 kB\nPss: 1024 kB\n"
    assert parse_pss(text) == 1024 * 1024
    assert parse_pss("Rss: 1 kB\n") == 0


def test_process_group_pss_sums_exactly_the_group(tmp_path):
    """Two processes in a new session (one group): their PSS is counted, ours is not."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "p = subprocess.Popen([sys.executable, '-c', 'b = bytearray(64 << 20); "
         "import time; time.sleep(60)']); b = bytearray(32 << 20); time.sleep(60)"],
        start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        total = 0
        while time.monotonic() < deadline:
            total = process_group_pss(child.pid)
            if total > 96 << 20:
                break
            time.sleep(0.2)
        assert total > 96 << 20, total  # both buffers (32 + 64 MiB), so both processes
        # ...and nothing outside the group: every process here together holds gigabytes.
        assert total < 400 << 20, total
        assert process_group_pss(os.getpgrp()) > 0
    finally:
        os.killpg(child.pid, 9)
        child.wait()
    deadline = time.monotonic() + 10  # the grandchild exits a moment after its SIGKILL
    while process_group_pss(child.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_group_pss(child.pid) == 0  # the group is gone
