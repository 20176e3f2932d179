"""The replica pool's pure parts: routing, what counts as a replica fault, adapters as bytes,
and the settings that turn a pool on (or are refused with one)."""

from __future__ import annotations

import json

import httpx
import pytest
import ray
from conftest import ROOT
from pydantic import ValidationError

from orchestrator.run.pool_faults import refused, replica_fault
from orchestrator.run.pool_route import inflight_bound, pick_replica, uneven
from orchestrator.service.server import stack_config
from orchestrator.service.settings import Settings
from services.adapter_files import AdapterPathError, read_adapter, write_adapter
from services.config import GeneratorConfig
from services.generator.launcher import GeneratorError


def test_the_least_loaded_live_replica_is_picked():
    assert pick_replica([30, 10, 20], [True, True, True]) == 1
    assert pick_replica([30, 10, 20], [True, False, True]) == 2
    assert pick_replica([5, 5], [True, True]) == 0  # ties: the lowest index
    with pytest.raises(GeneratorError):
        pick_replica([0, 0], [False, False])


def test_a_replica_at_its_in_flight_bound_is_skipped():
    assert pick_replica([0, 50], [True, True], [4, 2], bound=4) == 1
    assert pick_replica([0, 50], [True, True], [4, 4], bound=4) is None  # wait for a slot
    with pytest.raises(GeneratorError):
        pick_replica([0, 0], [False, False], [0, 0], bound=4)


def test_the_in_flight_bound_is_half_an_even_share_within_the_engine():
    assert inflight_bound(32, 2, n=8, max_num_seqs=256) == 8
    assert inflight_bound(32, 3, n=8, max_num_seqs=256) == 6  # ceil(ceil(32 / 3) / 2)
    assert inflight_bound(32, 2, n=8, max_num_seqs=32) == 4  # the engine runs 4 x 8 at once
    assert inflight_bound(1, 2, n=8, max_num_seqs=256) == 1
    assert inflight_bound(32, 2, n=8, max_num_seqs=256, share=None) is None


def test_routing_is_bounded_only_while_replica_speeds_differ():
    assert not uneven([None, None]) and not uneven([100.0, None])  # nothing to compare yet
    assert not uneven([100.0, 80.0])
    assert uneven([100.0, 30.0])


def test_outstanding_tokens_spread_a_step_evenly():
    """Equal requests alternate; a replica holding a long request gets the next short ones."""
    out, up = [0, 0], [True, True]
    picks = []
    for cost in (100, 100, 100, 100):
        i = pick_replica(out, up)
        out[i] += cost
        picks.append(i)
    assert picks == [0, 1, 0, 1]
    out = [1000, 0]
    assert pick_replica(out, up) == 1


def _status(code: int) -> httpx.HTTPStatusError:
    req = httpx.Request("POST", "http://127.0.0.1/v1/completions")
    return httpx.HTTPStatusError("x", request=req, response=httpx.Response(code, request=req))


def test_only_a_lost_or_failing_server_is_a_replica_fault():
    assert replica_fault(httpx.ConnectError("refused"))
    assert replica_fault(httpx.ReadTimeout("hung"))
    assert replica_fault(_status(500))
    assert not replica_fault(_status(404))  # a request error: rerouting would not help
    assert not replica_fault(ValueError("bad"))


def test_a_4xx_to_a_load_is_the_versions_fault_not_the_replicas(tmp_path):
    assert refused(_status(400)) and refused(_status(404))
    assert not refused(_status(500)) and not refused(httpx.ConnectError("refused"))
    # As ray.get raises an actor's error: wrapped, the cause kept.
    assert refused(ray.exceptions.RayTaskError("load", "tb", _status(404)))
    assert replica_fault(ray.exceptions.RayTaskError("load", "tb", _status(500)))
    # Only an adapter that cannot be written is the version's; a garbled body from a dying
    # server is a ValueError too (JSONDecodeError), and the replica's fault.
    assert refused(AdapterPathError("adapter file '../x' escapes its folder"))
    garbled = json.JSONDecodeError("Expecting value", "<html>", 0)
    assert not refused(garbled) and replica_fault(garbled)
    assert not refused(ray.exceptions.RayTaskError("models", "tb", garbled))
    with pytest.raises(AdapterPathError):
        write_adapter({"../escape.txt": b"x"}, tmp_path / "step-1")


def test_adapter_files_round_trip(tmp_path):
    src = tmp_path / "step-3"
    (src / "sub").mkdir(parents=True)
    (src / "adapter_config.json").write_text('{"r": 8}')
    (src / "adapter_model.safetensors").write_bytes(b"\x00\x01weights")
    (src / "sub" / "x.txt").write_text("nested")
    files = read_adapter(str(src))
    dest = write_adapter(files, tmp_path / "node" / "run-v3")
    assert read_adapter(str(dest)) == files
    assert not (tmp_path / "node" / "run-v3.tmp").exists()
    with pytest.raises(ValueError, match="escapes"):
        write_adapter({"../evil": b"x"}, tmp_path / "node" / "run-v4")


def test_pool_settings_are_checked():
    assert GeneratorConfig(replicas=2).replicas == 2
    with pytest.raises(ValidationError, match="generator.url"):
        GeneratorConfig(replicas=2, url="http://127.0.0.1:8000")
    with pytest.raises(ValidationError, match="merged"):
        GeneratorConfig(adapter_transport="ray", sync_mode="merged")
    with pytest.raises(ValidationError):
        GeneratorConfig(replicas=0)


def test_up_generators_overrides_the_config(tmp_path):
    config = ROOT / "configs" / "tiny-cpu.toml"
    cfg = stack_config(Settings(config=config, generators=3, work_dir=tmp_path))
    assert cfg.generator.replicas == 3
    with pytest.raises(ValidationError, match="generator.url"):
        stack_config(Settings(config=config, generators=2, work_dir=tmp_path,
                              generator_url="http://127.0.0.1:9"))
