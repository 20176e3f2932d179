"""Reward functions by name (issue 25): the contract, the registry of installed functions, the
config that names them, and the engine that runs them in the grader's worker processes, where
a function that raises, hangs, dies or returns no number costs only its completions.

Real spawned workers, a fake installed plugin (tests/reward_plugins.py registered by a
dist-info on sys.path); nothing mocked."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace

import pytest
from conftest import ROOT
from pydantic import ValidationError
from reward_helpers import with_fake_plugin

from services.config import RewardConfig, load_config
from services.data import Problem, load_fields, load_gsm8k_jsonl, load_math
from services.rewards.engine import RewardEngine, Sample
from services.rewards.functions import RewardValueError, to_outcome
from services.rewards.registry import BUILTINS, RewardConfigError, resolve


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    undo = with_fake_plugin(tmp_path_factory.mktemp("site"))
    yield
    undo()


def test_builtins_are_registered_like_plugins():
    """pyproject registers exactly the built-ins the registry knows by name."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        eps = tomllib.load(f)["project"]["entry-points"]["mathrl.rewards"]
    assert eps == BUILTINS


def test_return_values_are_checked():
    assert to_outcome(0.5) == (0.5, {})
    assert to_outcome(True) == (1.0, {})
    assert to_outcome((1, {"a": 2})) == (1.0, {"a": 2.0})
    for bad in (float("nan"), "1", None, (1.0,), (1.0, [1]), (1.0, {"a/b": 1}),
                (1.0, {"a": float("inf")}), (1.0, {f"p{i}": 0 for i in range(33)})):
        with pytest.raises(RewardValueError):
            to_outcome(bad)


def test_names_and_options_are_resolved_or_refused_naming_the_field(plugin):
    math = resolve("math", 1.0, {"grading": "lenient"})
    assert math.options.grading == "lenient" and math.options.format_weight == 0.1
    assert math.runs_in == "worker" and resolve("digit_share", 1.0, {}).tokens

    def refused(name, options, index=0):
        with pytest.raises(RewardConfigError) as e:
            resolve(name, 1.0, options, index=index)
        return e.value.field, e.value.message

    field, msg = refused("nope", {}, index=2)
    assert field == "functions.2.name" and "math" in msg and "flaky" in msg
    assert refused("math", {"grading": "loose"})[0] == "functions.0.options.grading"
    assert refused("math", {"bogus": 1})[0] == "functions.0.options.bogus"
    assert refused("digit_share", {"x": 1}) == ("functions.0.options",
                                                "this reward function takes no options")
    assert refused("flaky", {})[0] == "functions.0.options.marker"  # a plugin's own model
    assert refused("mean", {})[0] == "functions.0.name"  # the scorer's own key
    assert "fails to load" in refused("not_importable", {})[1]
    assert "pydantic model" in refused("bad_options_attr", {})[1]


def test_config_names_functions_and_keeps_the_old_fields():
    legacy = RewardConfig().effective_functions()
    assert [(f.name, f.options) for f in legacy] == [("math", {"format_weight": 0.1})]
    assert RewardConfig(kind="digit_share").effective_functions()[0].name == "digit_share"
    paper = load_config(ROOT / "configs" / "paper-gsm8k-12gb.toml").reward.effective_functions()
    assert [(f.name, f.options) for f in paper] == [("final-answer-line",
                                                      {"format_weight": 0.5})]
    cfg = RewardConfig.model_validate({"functions": [
        {"name": "math", "options": {"grading": "lenient"}}, {"name": "x", "weight": -0.5}]})
    assert [(f.name, f.weight) for f in cfg.effective_functions()] == [("math", 1.0),
                                                                        ("x", -0.5)]
    for bad in ({"functions": [{"name": "math"}], "kind": "digit_share"},
                {"functions": [{"name": "math"}], "format_weight": 0.5},
                {"functions": [{"name": "math"}, {"name": "math"}]},
                {"functions": [{"name": "a/b"}]}):
        with pytest.raises(ValidationError):
            RewardConfig.model_validate(bad)


def test_loaders_keep_a_rows_other_fields_as_metadata(tmp_path):
    rows = tmp_path / "g.jsonl"
    rows.write_text(json.dumps({"question": "q?", "answer": "x #### 3", "unit": "km",
                                "tests": [1, 2]}) + "\n")
    assert load_gsm8k_jsonl(rows)[0].metadata == {"unit": "km", "tests": [1, 2]}
    rows.write_text(json.dumps({"problem": "p", "answer": "4", "level": 3}) + "\n")
    assert load_math(rows)[0].metadata == {"level": 3}
    rows.write_text(json.dumps({"q": "p", "a": "4", "tol": 0.1}) + "\n")
    assert load_fields(rows, "q", "a")[0].metadata == {"tol": 0.1}
    assert Problem(id="a", question="q", answer="1").metadata == {}


@pytest.fixture(scope="module")
def engine(plugin, tmp_path_factory):
    """Every kind of function at once, plugins in 2 workers with a 1 s limit per call."""
    marker = tmp_path_factory.mktemp("flaky") / "hung"
    specs = [("math", 1.0, {}), ("with_parts", 2.0, {}), ("flaky", 1.0, {"marker": str(marker)}),
             ("nan_score", 1.0, {}), ("text_score", 1.0, {}), ("exits", 1.0, {}),
             ("digit_share", 1.0, {})]
    fns = [resolve(n, w, o, index=i) for i, (n, w, o) in enumerate(specs)]
    # `math` a second time, reading answers leniently (weight 0: only its metrics count).
    fns.append(replace(resolve("math", 1.0, {"grading": "lenient"}), name="lenient", weight=0))
    e = RewardEngine(fns, timeout_s=1.0, num_workers=2)
    yield e
    e.close()


def test_engine_sums_weights_names_parts_and_contains_failures(engine):
    samples = [Sample("What is 2+2?", r"\boxed{4}.", "4", {"bonus": 0.25}, ["\\", "4", "}"]),
               Sample("", "it is 4", "4", {}, ["it", " is", " 4"])]  # odd length: flaky raises
    res = engine.score(samples)
    m = res.metrics
    # Each function's own score, its parts under their names, clashing names under its own.
    assert m["math"] == [1.1, 0.0] and m["accuracy"] == [1.0, 0.0] and m["format"] == [1, 0]
    assert m["lenient"] == [1.1, 1.0] and m["lenient/accuracy"] == [1.0, 1.0]  # the option
    assert m["with_parts"] == [0.25, 0.0] and m["echo"] == [1.0, 0.0]
    assert m["with_parts/mean"] == [7.0, 7.0] and "mean" not in m and m["gold"] == [4.0, 4.0]
    assert m["digit_share"] == pytest.approx([1 / 3, 1 / 3])
    # flaky hangs on its first call (killed at 1 s: a timeout) and raises on the odd one;
    # nan_score, text_score and exits fail everywhere: all of them score 0, nothing raised.
    assert m["flaky"] == [0.0, 0.0] and m["nan_score"] == m["exits"] == [0.0, 0.0]
    assert res.timeouts == 1 and res.errors == 1 + 2 + 2 + 2
    assert res.totals == pytest.approx([1.1 + 2 * 0.25 + 1 / 3, 1 / 3])
    notes = engine.take_notes()
    assert sorted(n.split("'")[1] for n in notes) == ["exits", "flaky", "nan_score",
                                                      "text_score"]
    assert any("time limit" in n for n in notes) and any("not finite" in n for n in notes)
    # Again: the same failures are counted, but each function's note was given once.
    again = engine.score(samples)
    assert again.errors == 1 + 2 + 2 + 2 and again.timeouts == 0  # flaky hangs once a run
    assert again.metrics["flaky"] == [0.5, 0.0] and engine.take_notes() == []


def test_the_math_reward_pays_for_a_value_not_the_question():
    """math-verify evaluates what it parses (`\\boxed{27 + 82}` "equals" 109): a policy on
    two-digit sums learned to box the question. The `math` reward pays for the value only."""
    from services.rewards.builtins import MathOptions, math_reward

    def accuracy(text: str, grading: str) -> float:
        return math_reward("What is 27 + 82?", text, "109", {},
                           MathOptions(grading=grading))[1]["accuracy"]

    for grading in ("strict", "lenient"):
        assert accuracy("\\boxed{109}", grading) == 1.0
        assert accuracy("\\boxed{27 + 82}", grading) == 0.0
        assert accuracy("#### 27+82", grading) == 0.0
    assert accuracy("27 + 82 = 109", "lenient") == 1.0  # working shown, then the value


def test_a_plugin_never_runs_in_the_orchestrator(plugin, tmp_path):
    """A plugin that asks to run in the parent (`runs_in`) still gets a worker process."""
    import reward_plugins

    reward_plugins.with_parts.runs_in = "parent"
    try:
        fn = resolve("with_parts", 1.0, {})
    finally:
        del reward_plugins.with_parts.runs_in
    assert fn.runs_in == "worker"


def test_scorer_hands_problems_to_functions_and_metrics_to_the_step(plugin):
    from orchestrator.run.rollout import Rollout, Scorer, rollout_metrics
    from services.schemas import Completion

    cfg = RewardConfig.model_validate({"num_workers": 1, "functions": [
        {"name": "with_parts"}, {"name": "nan_score", "weight": 3.0}]})
    scorer = Scorer(cfg, None)
    try:
        problems = [Problem(id="a", question="Q?", answer="2", metadata={"bonus": 0.5}),
                    Problem(id="b", question="", answer="3")]
        groups = [[Completion(token_ids=[1], logprobs=[0.0], text=t) for t in ("x", "y")]
                  for _ in problems]
        scored = scorer.score(groups, [p.answer for p in problems], problems)
        notes = scorer.take_notes()
    finally:
        scorer.close()
    assert scored.rewards == [[0.5, 0.5], [0.0, 0.0]] and scored.errors == 4
    assert len(notes) == 1 and "nan_score" in notes[0]
    roll = Rollout(version=0, groups=groups, scored=scored, kept=[0, 1], rounds=1,
                   t_generate=1.0)
    m = rollout_metrics(roll, 0)
    assert m["reward/mean"] == 0.25 and m["reward/with_parts"] == 0.25
    assert m["reward/echo"] == 0.5 and m["reward/gold"] == 2.5 and m["reward/nan_score"] == 0
    assert m["reward/errors"] == 4 and m["reward/timeouts"] == 0
    assert m["reward/accuracy"] == 0 and m["reward/with_parts/mean"] == 7.0
