"""`mathrl grade FILE.jsonl` through the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def test_grade_cli(tmp_path):
    f = tmp_path / "in.jsonl"
    rows = [{"completion": "so \\boxed{72}", "gold": "72", "id": 1},
            {"completion": "The answer is 0.5.", "gold": "\\frac{1}{2}"},
            {"completion": "\\boxed{9^{9^{9^9}}}", "gold": "1"},
            {"completion": "#### 27", "gold": 27.0}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    exe = shutil.which("mathrl") or str(Path(sys.executable).with_name("mathrl"))
    out = subprocess.run([exe, "grade", str(f)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = [json.loads(line) for line in out.stdout.splitlines()]
    assert [g["correct"] for g in got] == [True, True, False, True]
    assert got[0]["id"] == 1
    assert "3/4 correct" in out.stderr


def test_grade_cli_lenient_reads_unanchored_numbers(tmp_path):
    """`8` and `3 + 5 = 8` (gold 8) are wrong under strict grading, right under lenient; an
    anchored answer still wins over a later number in both."""
    f = tmp_path / "in.jsonl"
    rows = [{"completion": "8", "gold": "8"},
            {"completion": "3 + 5 = 8", "gold": 8},
            {"completion": "\\boxed{7}, not 8", "gold": "8"},
            {"completion": "no number here", "gold": "8"},
            {"completion": "\\boxed{3 + 5}", "gold": "8"},  # the question, not its answer
            {"completion": "#### 3 + 5", "gold": "8"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    exe = shutil.which("mathrl") or str(Path(sys.executable).with_name("mathrl"))
    got = {}
    for mode in ("strict", "lenient"):
        out = subprocess.run([exe, "grade", str(f), "--grading", mode], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        got[mode] = [json.loads(line)["correct"] for line in out.stdout.splitlines()]
    assert got == {"strict": [False, False, False, False, False, False],
                   "lenient": [True, True, False, False, False, False]}
    bad = subprocess.run([exe, "grade", str(f), "--grading", "loose"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and "--grading" in bad.stderr


def test_the_count_of_right_answers_leaves_out_unevaluated_ones(pool):
    """`grade_jsonl`'s count agrees with the rows it writes: `\\boxed{3 + 5}` is not counted."""
    import io

    from services.rewards.grade_file import grade_jsonl

    rows = [{"completion": "\\boxed{8}", "gold": "8"},
            {"completion": "\\boxed{3 + 5}", "gold": "8"}]
    out = io.StringIO()
    n, right = grade_jsonl([json.dumps(r) for r in rows], out, pool)
    assert (n, right) == (2, 1)
    assert [json.loads(line)["correct"] for line in out.getvalue().splitlines()] == [True, False]
