"""benchmarks/proctree.py: PSS parsing, the tree walk, names, and one real child process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from proctree import (  # noqa: E402
    ProcTreeSampler,
    descendants,
    name_rank,
    parse_pss,
    parse_stat,
    short_name,
)

MiB = 1 << 20


def test_parse_pss_reads_the_pss_line_in_bytes():
    text = ("55655430a000-7fff35fda000 ---p 00000000 00:00 0   [rollup]\n"
            "Rss:                1728 kB\nPss:                 330 kB\n"
            "Pss_Dirty:           112 kB\nPss_Anon:            112 kB\n")
    assert parse_pss(text) == 330 * 1024  # not Pss_Dirty / Pss_Anon
    assert parse_pss("") == 0


def test_parse_stat_survives_odd_command_names():
    fields = " ".join(["S", "4242"] + ["0"] * 17 + ["987654"] + ["0"] * 10)
    assert parse_stat(f"77 (python) {fields}") == (77, 4242, 987654)
    # A comm holding spaces and ')' (process titles can): split after the last ')'.
    assert parse_stat(f"78 (a) b (c)) {fields}") == (78, 4242, 987654)


def test_descendants_walks_the_whole_subtree_only():
    ppid = {1: 0, 10: 1, 11: 10, 12: 10, 13: 12, 20: 1, 21: 20}
    assert descendants(10, ppid) == {10, 11, 12, 13}
    assert descendants(13, ppid) == {13}
    assert descendants(99, ppid) == {99}


@pytest.mark.parametrize(("argv", "name"), [
    (["VLLM::EngineCore"], "VLLM::EngineCore"),
    (["ray::Learner.train_step", "", ""], "ray::Learner"),
    (["ray::IDLE"], "ray::IDLE"),
    (["/x/.venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"],
     "vllm api_server"),
    (["/x/ray/core/src/ray/raylet/raylet", "--raylet_socket_name=/tmp/s"], "raylet"),
    (["/x/ray/core/src/ray/gcs/gcs_server", "--log_dir=/tmp"], "gcs_server"),
    (["/x/python", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()",
      "--multiprocessing-fork"], "mp child"),
    (["/x/python", "-m", "orchestrator.cli", "train", "c.toml"], "driver"),
    (["/usr/bin/python3", "-u", "bench/thing.py", "--flag"], "thing.py"),
    (["/usr/bin/python3", "-c", "print(1)"], "python -c"),
    (["/x/python", "/x/ray/_private/workers/default_worker.py", "--node-ip-address=127.0.0.1",
      "--entrypoint", "orchestrator.cli train"], "ray worker"),
    (["/x/bin/gcc/cc1plus", "-quiet", "orchestrator.cli"], "cc1plus"),
    ([], "?"),
])
def test_short_names(argv, name):
    assert short_name(argv) == name


def test_name_rank_prefers_titles():
    assert name_rank("ray::Learner") > name_rank("raylet") > name_rank("ray::IDLE")
    assert name_rank("VLLM::Worker") == 2
    assert name_rank("ray worker") == name_rank("python -c") == name_rank("mp child") == 0


def test_sampler_sees_a_child_allocating_200_mib():
    code = ("import sys, time\n"
            "b = bytearray(b'x') * (200 << 20)\n"  # written, so every page is resident
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n")
    with ProcTreeSampler(root=_self_pid(), interval_s=0.2, root_name="pytest") as tree:
        time.sleep(0.5)
        base = tree.peak_total
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(1.0)
        finally:
            child.stdin.close()
            child.wait(timeout=30)
    assert tree.samples >= 5
    assert tree.peak_total - base >= 150 * MiB
    rows = {r["pid"]: r for r in tree.table()}
    assert rows[child.pid]["peak_pss"] >= 150 * MiB
    assert rows[child.pid]["name"] == "python -c"
    assert rows[_self_pid()]["name"] == "pytest"
    assert tree.summary()["peak_pss"] == tree.peak_total


def _self_pid() -> int:
    import os

    return os.getpid()
