"""The generated skills (services/data/skills.py): seeded, correct, selectable from `[data]`,
and the skill demo's held-out set disjoint from what it trains on."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT
from pydantic import ValidationError

from orchestrator.cli.eval_report import parse_datasets
from orchestrator.run.evaluate import benchmark_configs, benchmark_problems, training_problems
from services.config import DataConfig, load_config
from services.data import SKILLS, distinct_skill_problems, load_problems, skill_problems
from services.evals import load_benchmark

_NUMBERS = re.compile(r"\d+")


def _value(task: str, question: str) -> int:
    """The answer, recomputed from the question's text alone."""
    if task == "shop":
        a, b, c = map(int, _NUMBERS.findall(question))
        return a + b * c
    expr = question.removeprefix("What is ").removesuffix("?")
    assert re.fullmatch(r"[\d +*-]+", expr), question
    return eval(expr)  # trusted: digits and + - * only, checked above


@pytest.mark.parametrize("task", sorted(SKILLS))
def test_skill_draws_are_seeded_and_correct(task):
    a = skill_problems(task, 300, seed=5)
    assert a == skill_problems(task, 300, seed=5)
    assert a != skill_problems(task, 300, seed=6)
    assert a[:40] == skill_problems(task, 40, seed=5)  # the first k of n are a draw of k
    assert a[7].id == f"{task}-5-7" and len({p.id for p in a}) == 300
    for p in a:
        assert str(_value(task, p.question)) == p.answer, p


def test_two_digit_sums_are_two_digit_and_carry_often():
    sums = skill_problems("sum2", 500, seed=0)
    pairs = [tuple(map(int, _NUMBERS.findall(p.question))) for p in sums]
    assert all(10 <= x <= 99 for pair in pairs for x in pair)
    carries = sum((a % 10) + (b % 10) >= 10 for a, b in pairs) / len(pairs)
    assert 0.35 < carries < 0.65  # about half of the sums carry a ten


def test_distinct_draws_and_load_problems():
    d = distinct_skill_problems("sum2", 250, seed=1)
    assert len(d) == len({p.question for p in d}) == 250
    assert load_problems("skill", skill={"task": "chain3", "n": 30}, seed=2) == \
        skill_problems("chain3", 30, seed=2)
    assert load_problems("skill", skill={"task": "sum2", "n": 30}, seed=2, limit=4) == \
        skill_problems("sum2", 4, seed=2)
    with pytest.raises(ValueError, match="needs its settings"):
        load_problems("skill")  # never a default task by accident
    with pytest.raises(ValueError, match="unknown skill"):
        skill_problems("nonesuch", 3, seed=0)
    assert load_benchmark("sum2", limit=9, seed=3) == distinct_skill_problems("sum2", 9, seed=3)
    assert parse_datasets("sum2,arith") == [("sum2", None), ("arith", None)]


def test_data_config_selects_a_skill():
    d = DataConfig(source="skill", skill={"task": "chain3", "n": 64})
    assert (d.skill.task, d.skill.n) == ("chain3", 64) and d.path is None
    for bad in ({"task": "nonesuch"}, {"n": 0}, {"task": "sum2", "extra": 1}):
        with pytest.raises(ValidationError):
            DataConfig(source="skill", skill=bad)


def test_skill_demo_eval_set_is_held_out_of_training():
    cfg = load_config(ROOT / "configs" / "smollm2-skill-cpu.toml")
    assert cfg.data.source == "skill" and cfg.eval.hold_out
    evals = [p for b in benchmark_configs(cfg.eval) for p in benchmark_problems(cfg, b)]
    asked = {p.question for p in evals}
    assert len(asked) == len(evals) >= 200  # distinct held-out problems, each asked once
    assert all(p.id.startswith(f"{cfg.data.skill.task}-{cfg.schedule.seed + 1}-") for p in evals)
    train = training_problems(cfg)
    assert len(train) > 3000 and not asked & {p.question for p in train}
    # The hold-out is what makes them disjoint: without it the two draws share sums.
    mixed = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"hold_out": False})})
    assert asked & {p.question for p in training_problems(mixed)}


def test_demo_task_configs(tmp_path):
    from orchestrator.cli.demo import write_config

    arith = load_config(write_config("/m", None, tmp_path / "a.toml"))
    assert arith.data.source == "arith" and arith.model.name_or_path == "/m"
    skill = load_config(write_config("/m", 7, tmp_path / "s.toml", "chain3"))
    assert (skill.name, skill.data.skill.task, skill.schedule.steps) == ("smollm2-chain3",
                                                                          "chain3", 7)
    assert [b.name for b in skill.eval.benchmarks] == ["chain3"]
    with pytest.raises(ValueError, match="unknown demo task"):
        write_config("/m", None, tmp_path / "x.toml", "nonesuch")
