"""A replica pool Ray cannot place is refused before any replica is asked for, in one line
naming what the cluster lacks (on a GPU machine each replica takes a card, and the learner one
more: `--generators 2` on one card used to wait 660 s and fail with GetTimeoutError)."""

from __future__ import annotations

import pytest
from conftest import tiny_config

from orchestrator.run import stack as stack_mod
from orchestrator.run.stack import Stack, placement_problem
from services.generator.launcher import GeneratorError


def node(**resources) -> dict[str, float]:
    return {"CPU": 16.0, **{k: float(v) for k, v in resources.items()}}


def test_one_card_cannot_hold_two_replicas_and_the_learner():
    one_gpu = [node(GPU=1, learner=1, generator=2)]
    problem = placement_problem(one_gpu, replicas=2, gpus_per_replica=1, learner_gpus=1)
    assert problem is not None and "\n" not in problem
    assert "2 GPU(s) (it has 1;" in problem, problem
    # Three cards on the machine: it fits.
    assert placement_problem([node(GPU=3, learner=1, generator=2)], replicas=2,
                             gpus_per_replica=1, learner_gpus=1) is None


def test_cpu_pool_needs_generator_slots_only():
    # No GPU: replicas take a `generator` slot each; the learner's node may join later.
    assert placement_problem([node(generator=2)], replicas=2, gpus_per_replica=0,
                             learner_gpus=0) is None
    problem = placement_problem([node(learner=1, generator=1)], replicas=3,
                                gpus_per_replica=0, learner_gpus=0)
    assert problem is not None and "2 `generator` slot(s) (it has 1)" in problem, problem


def test_slots_and_cards_must_be_on_the_same_node():
    # Enough of each in all, but the generator slots sit where no card is free.
    nodes = [node(GPU=2, learner=1), node(generator=2)]
    problem = placement_problem(nodes, replicas=1, gpus_per_replica=1, learner_gpus=1)
    assert problem is not None and "together" in problem, problem
    # Nodes as the README's cluster has them: the learner's, and one per replica.
    nodes = [node(GPU=1, learner=1), node(GPU=1, generator=1), node(GPU=1, generator=1)]
    assert placement_problem(nodes, replicas=2, gpus_per_replica=1, learner_gpus=1) is None


def test_the_learner_needs_a_card_beside_its_resource():
    nodes = [node(GPU=0, learner=1), node(GPU=2, generator=2)]
    problem = placement_problem(nodes, replicas=2, gpus_per_replica=1, learner_gpus=1)
    assert problem is not None and "`learner` resource" in problem, problem
    # The learner's card may be on a replica node when that node carries `learner` too.
    nodes = [node(GPU=3, learner=1, generator=2)]
    assert placement_problem(nodes, replicas=2, gpus_per_replica=1, learner_gpus=1) is None


def test_stack_refuses_before_starting_replicas(tiny_model_dir, tmp_path, monkeypatch):
    """Stack.start checks the cluster Ray reports and asks for no replica it cannot place."""
    import ray

    cfg = tiny_config(tiny_model_dir, generator__replicas=2)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(stack_mod.runtime, "start_ray", lambda **_: None)
    # The real stop_ray would remove the temp folder of the session's own Ray (its sockets)
    # while that Ray runs on: every worker Ray started after this test then failed to connect.
    stopped = []
    monkeypatch.setattr(stack_mod.runtime, "stop_ray", lambda: stopped.append(True))
    monkeypatch.setattr(stack_mod.runtime, "cluster_has_gpus", lambda: True)
    monkeypatch.setattr(ray, "nodes", lambda: [
        {"Alive": True, "Resources": node(GPU=1, learner=1, generator=2)},
        {"Alive": False, "Resources": node(GPU=8, generator=8)}])  # a dead node offers nothing

    def no_pool(*a, **k):
        raise AssertionError("replicas were asked for")

    monkeypatch.setattr(stack_mod, "ReplicaPool", no_pool)
    with pytest.raises(GeneratorError, match=r"cannot place 2 generator replicas.*GPU"):
        Stack(cfg, tmp_path / "stack").start()
    assert stopped == [True]  # the Ray it started, stopped again when it refuses
