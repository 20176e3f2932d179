"""The replica pool under faults, driven with fake actors and fake HTTP clients (no Ray, no
vLLM, seconds): the culprit of a failed load, the restart budget, recycling, a new run,
/health, routing around a slow replica, seeds, sleep and wake, and what is counted and noted.
tests/test_replicas.py runs the real thing (Ray nodes, vLLM) on the happy path and one kill."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import ray
from conftest import ROOT, set_dotted
from fastapi.testclient import TestClient

from orchestrator.run.pool import ReplicaPool
from orchestrator.run.recovery import classify
from services.config import RunConfig, load_config
from services.generator.launcher import GeneratorError
from services.generator.replica import LoadReport, ReplicaInfo
from services.schemas import AdapterRef, Completion, GenerateRequest


def _status(code: int) -> httpx.HTTPStatusError:
    req = httpx.Request("POST", "http://127.0.0.1/v1/load_lora_adapter")
    return httpx.HTTPStatusError(f"-> {code}", request=req,
                                 response=httpx.Response(code, request=req))


class Ref:
    """A fake ObjectRef: a value, an error raised by `get`, or pending (never ready)."""

    def __init__(self, value=None, error: BaseException | None = None, pending: bool = False):
        self.value, self.error, self.pending = value, error, pending


class Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args, **kwargs) -> Ref:
        try:
            out = self.fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - an actor call's error is its ref's
            return Ref(error=e)
        return out if isinstance(out, Ref) else Ref(out)


class FakeActor:
    def __init__(self, fleet: Fleet, index: int, dead: bool):
        self.fleet, self.index, self.dead = fleet, index, dead
        for name in ("start", "restart", "load", "memory", "release", "stop"):
            setattr(self, name, Method(getattr(self, "_" + name)))

    def _alive(self) -> None:
        if self.dead:
            raise ray.exceptions.ActorDiedError()

    def _start(self):
        self._alive()
        self.fleet.starts[self.index] += 1
        if (err := self.fleet.start_error.get(self.index)) is not None:
            raise err
        info = ReplicaInfo(index=self.index, url=f"http://replica{self.index}", node_id="n" * 12,
                           node_dir="/tmp/node", pid=1)
        if self.fleet.hold_restarts and self.fleet.starts[self.index] > 1:
            ref = Ref(info, pending=True)
            self.fleet.held.append(ref)
            return ref
        return info

    _restart = _start

    def _load(self, run_name, alias, ref, files):
        self._alive()
        if files is not None:
            self.fleet.get(files, timeout=None)  # Ray fails a call whose argument failed
        if (err := self.fleet.load_error.get(self.index)) is not None:
            raise err
        name = f"{run_name}-v{ref.version}"
        return LoadReport(name=name, version=ref.version, path=ref.path,
                          models=["base", alias, name], seconds=0.01)

    def _memory(self):
        self._alive()
        return self.fleet.memory.get(self.index)

    def _release(self):
        self._alive()

    def _stop(self):
        pass


class FakeClient:
    def __init__(self, fleet: Fleet, index: int):
        self.fleet, self.index = fleet, index

    def generate_one(self, req: GenerateRequest, i: int) -> list[Completion]:
        time.sleep(self.fleet.latency.get(self.index, 0.0))
        if (err := self.fleet.gen_error.get(self.index)) is not None:
            raise err
        return [Completion(token_ids=[1], logprobs=[0.0], text="1", finish_reason="stop")] \
            * req.n

    def models(self) -> list[str]:
        return ["base"]

    def sleep(self, level: int = 1) -> None:
        if (err := self.fleet.sleep_error.get(self.index)) is not None:
            raise err

    def wake_up(self) -> None:
        if (err := self.fleet.wake_error.get(self.index)) is not None:
            raise err

    def close(self) -> None:
        pass


class Fleet:
    """The pool's Ray calls (orchestrator/run/pool_actors.RayCalls) and its replicas' HTTP
    clients, scripted per replica index."""

    def __init__(self, n: int):
        self.actors: list[FakeActor] = []
        self.configs: list[RunConfig] = []
        self.starts = [0] * n
        """start/restart calls per replica index (the first start included)."""
        self.start_error: dict[int, BaseException] = {}
        self.load_error: dict[int, BaseException] = {}
        self.gen_error: dict[int, BaseException] = {}
        self.sleep_error: dict[int, BaseException] = {}
        self.wake_error: dict[int, BaseException] = {}
        self.latency: dict[int, float] = {}
        self.memory: dict[int, int] = {}
        self.dead_on_spawn = False
        """Actors placed from now on are lost at once (their node keeps dying)."""
        self.hold_restarts = False
        """Restarts stay under way until `finish_restarts`."""
        self.held: list[Ref] = []

    def spawn(self, cfg, *, index, model_path, api_key):
        actor = FakeActor(self, index, dead=self.dead_on_spawn)
        self.actors.append(actor)
        self.configs.append(cfg)
        return actor

    def get(self, ref, timeout):
        if isinstance(ref, list):
            return [self.get(x, timeout) for x in ref]
        if ref.pending:
            raise ray.exceptions.GetTimeoutError("pending")
        if ref.error is not None:
            raise ref.error
        return ref.value

    def wait(self, refs, timeout, fetch_local=True):
        return [r for r in refs if not r.pending], [r for r in refs if r.pending]

    def kill(self, actor) -> None:
        actor.dead = True

    def client(self, url: str) -> FakeClient:
        return FakeClient(self, int(url.removeprefix("http://replica")))

    def finish_restarts(self) -> None:
        for ref in self.held:
            ref.pending = False
        self.held.clear()


def _cfg(**overrides) -> RunConfig:
    data = load_config(ROOT / "configs" / "tiny-cpu.toml").model_dump()
    set_dotted(data, **{"generator__replicas": 2, **overrides})
    return RunConfig.model_validate(data)


def _pool(**overrides) -> tuple[ReplicaPool, Fleet]:
    cfg = _cfg(**overrides)
    fleet = Fleet(cfg.generator.replicas)
    pool = ReplicaPool(cfg, "/model")
    pool.calls, pool.make_client = fleet, fleet.client
    pool.start()
    pool.new_run()
    return pool, fleet


def _ref(version: int) -> AdapterRef:
    return AdapterRef(version=version, path=f"/runs/x/adapters/step-{version}")


def _req(n_prompts: int = 4) -> GenerateRequest:
    return GenerateRequest(model="run-v1", prompts=[[1, 2, 3]] * n_prompts, n=2,
                           max_tokens=4, temperature=1.0)


def _served(pool: ReplicaPool, version: int = 1) -> ReplicaPool:
    pool.apply("run", "policy", _ref(version))
    return pool


def _serving(**overrides) -> tuple[ReplicaPool, Fleet]:
    """A started pool serving version 1 of a run."""
    pool, fleet = _pool(**overrides)
    return _served(pool), fleet


def _restarts(fleet: Fleet, index: int) -> int:
    return fleet.starts[index] - 1


# ------------------------------------------------------------------ 2: the culprit of a load
def test_a_learner_lost_while_its_files_are_read_is_the_learners_fault():
    pool, fleet = _pool(generator__adapter_transport="ray")
    pool.files_of = lambda ref: Ref(error=ray.exceptions.ActorDiedError())
    with pytest.raises(Exception) as err:
        _served(pool)
    assert classify(err.value) == "learner"  # learner recovery: respawn it, not the fleet
    assert all(r.up for r in pool.replicas) and fleet.starts == [1, 1]


def test_a_learner_that_hangs_over_the_files_is_the_learners_fault():
    pool, fleet = _pool(generator__adapter_transport="ray")
    pool.call_timeout_s = 0.1
    pool.files_of = lambda ref: Ref(pending=True)
    with pytest.raises(Exception) as err:
        _served(pool)
    assert classify(err.value) == "learner"
    assert all(r.up for r in pool.replicas) and fleet.starts == [1, 1]


def test_recovery_respawns_the_learner_for_a_learner_lost_in_the_pool(tmp_path):
    """The run's recovery takes the learner's path: no generator restart, a new learner."""
    from orchestrator.run.recovery import Recovery
    from services.learner import checkpoint

    pool, fleet = _pool(generator__adapter_transport="ray")
    pool.files_of = lambda ref: Ref(error=ray.exceptions.ActorDiedError())
    with pytest.raises(Exception) as err:
        _served(pool)
    (tmp_path / "step-2").mkdir()
    (tmp_path / "step-2" / checkpoint.META).write_text("{}")
    done = []
    loop = SimpleNamespace(cfg=pool.cfg, state=SimpleNamespace(step=2),
                           restore=lambda path: done.append(("restore", path)))
    handle = SimpleNamespace(loop=loop, checkpoints=tmp_path,
                             replace_learner=lambda: done.append(("learner",)))
    stack = SimpleNamespace(recover_generator=lambda: done.append(("generator",)))
    assert Recovery(stack, handle, note=lambda step, text: None).handle_fault(err.value)
    assert done == [("learner",), ("restore", str(tmp_path / "step-2"))]


def test_a_version_the_replicas_refuse_restarts_none_and_fails_the_run():
    pool, fleet = _pool()
    fleet.load_error = {0: _status(404), 1: _status(404)}  # a path this node cannot see
    with pytest.raises(Exception) as err:
        _served(pool)
    assert classify(err.value) is None and "version 1" in str(err.value)
    assert all(r.up for r in pool.replicas) and fleet.starts == [1, 1]


def test_a_replica_that_fails_to_load_is_restarted_alone():
    pool, fleet = _pool(generator__adapter_transport="ray")
    pool.files_of = lambda ref: Ref({"adapter_config.json": b"{}"})
    fleet.load_error = {1: _status(500)}
    _served(pool)
    assert [r.up for r in pool.replicas] == [True, False] and fleet.starts == [1, 2]
    del fleet.load_error[1]
    pool.generate(_req())  # it is back, loads version 1, then takes prompts
    assert [r.version for r in pool.replicas] == [1, 1] and pool.replicas[1].up


# ------------------------------------------------------------------ 3: the restart budget
def test_a_crash_looping_replica_is_restarted_at_most_max_restarts_times():
    pool, fleet = _serving(generator__max_restarts=1)
    fleet.gen_error = {1: _status(500)}  # it starts, then fails every request
    for _ in range(5):
        assert len(pool.generate(_req())) == 4  # replica 0 answers everything
    assert _restarts(fleet, 1) == 1 and not pool.replicas[1].up
    assert any("used up its 1 restarts" in e for e in pool.events), list(pool.events)


def test_a_replica_that_cannot_load_after_a_restart_is_not_restarted_forever():
    pool, fleet = _serving(generator__max_restarts=2)
    fleet.gen_error = {1: _status(500)}
    fleet.load_error = {1: _status(503)}
    for _ in range(8):
        pool.generate(_req())
    assert _restarts(fleet, 1) == 2 and not pool.replicas[1].up


def test_max_restarts_zero_restarts_nothing():
    pool, fleet = _serving(generator__max_restarts=0)
    fleet.gen_error = {1: httpx.ConnectError("refused")}
    for _ in range(3):
        pool.generate(_req())
    assert _restarts(fleet, 1) == 0 and not pool.replicas[1].up


def test_a_server_that_never_starts_again_gets_exactly_max_restarts():
    pool, fleet = _serving(generator__max_restarts=3)
    fleet.start_error = {1: GeneratorError("vLLM exited")}
    fleet.gen_error = {1: httpx.ConnectError("refused")}
    for _ in range(10):
        pool.generate(_req())
    assert _restarts(fleet, 1) == 3


def test_replacing_a_lost_actor_is_bounded():
    pool, fleet = _serving(generator__max_restarts=2)
    fleet.actors[1].dead = True  # its node died: every actor placed there dies too
    fleet.dead_on_spawn = True
    fleet.gen_error = {1: httpx.ConnectError("refused")}
    pool.generate(_req())
    pool.recover()  # replica 0 is up: nothing to wait for, nothing to loop on
    for _ in range(5):
        pool.generate(_req())
    replacements = len(fleet.actors) - 2
    # Restart 1: the lost actor is replaced; that one is lost too: restart 2, replaced again.
    assert replacements == 2 and not pool.replicas[1].up


# ------------------------------------------------------------------ 5: recycling
def test_recycle_survives_a_lost_replica_actor():
    pool, fleet = _serving()
    fleet.memory = {0: 1 << 30}
    fleet.actors[1].dead = True
    assert pool.recycle(2 << 30, step=3) is False  # no raise: a replica fault, handled
    assert not pool.replicas[1].up and pool.replicas[1].restarting is not None


def test_recycle_restarts_one_replica_at_a_time():
    pool, fleet = _serving(generator__replicas=3)
    fleet.memory = {0: 5 << 30, 1: 7 << 30, 2: 6 << 30}
    fleet.hold_restarts = True
    assert pool.recycle(4 << 30, step=1)
    assert [r.up for r in pool.replicas] == [True, False, True]  # the largest first
    assert not pool.recycle(4 << 30, step=2)  # replica 1 is still on its way back
    fleet.finish_restarts()
    fleet.memory[1] = 1 << 30  # a fresh server
    pool.generate(_req())  # it rejoins
    assert all(r.up for r in pool.replicas)
    assert pool.recycle(4 << 30, step=3)
    assert [r.up for r in pool.replicas] == [True, True, False]
    assert [r.restarts for r in pool.replicas] == [0, 0, 0]  # recycling is no fault


# ------------------------------------------------------------------ 6: a new run
def test_a_new_run_restarts_a_replica_that_used_up_its_budget():
    pool, fleet = _serving(generator__max_restarts=0)
    fleet.gen_error = {1: _status(500)}
    pool.generate(_req())
    assert not pool.replicas[1].up and pool.replicas[1].restarting is None
    pool.release()
    del fleet.gen_error[1]
    pool.new_run()
    _served(pool, version=0)
    pool.generate(_req())
    assert pool.replicas[1].up and pool.replicas[1].version == 0


def test_a_new_run_with_no_replica_up_waits_for_them():
    pool, fleet = _serving(generator__max_restarts=0)
    fleet.gen_error = {0: _status(500), 1: _status(500)}
    with pytest.raises(GeneratorError):
        pool.generate(_req())
    pool.release()
    fleet.gen_error = {}
    pool.new_run()
    assert all(r.up for r in pool.replicas)


# ------------------------------------------------------------------ 7: /health
def test_health_is_degraded_with_no_replica_up(tmp_path):
    from orchestrator.service.api.app import Service, create_app
    from orchestrator.service.store import RunStore

    pool, fleet = _serving(generator__max_restarts=0)
    stack = SimpleNamespace(client=pool, pool=pool, cfg=pool.cfg)
    api = TestClient(create_app(RunStore(tmp_path / "runs.db"), Service(stack=stack)))
    assert api.get("/health").json()["generator"] is True
    fleet.gen_error = {0: _status(500), 1: _status(500)}
    with pytest.raises(GeneratorError):
        pool.generate(_req())
    r = api.get("/health")
    assert r.status_code == 503 and r.json()["generator"] is False


# ------------------------------------------------------------------ 10: routing
def test_a_slow_replica_gets_fewer_prompts():
    pool, fleet = _serving()
    # Replica 1 is twenty times slower; wide margins so that a loaded machine (the suite
    # beside vLLM) cannot delay replica 0's three short rounds past one long request.
    fleet.latency = {0: 0.05, 1: 1.0}
    pool.generate(_req(32))  # nothing measured yet: all at once, an even split
    assert pool.take_counts() == {0: 16, 1: 16}
    pool.generate(_req(32))
    counts = pool.take_counts()
    # Bounded now: replica 1 keeps its first 8 slots busy while replica 0 takes the rest.
    assert sum(counts.values()) == 32 and counts[1] <= 10 and counts[0] >= 22, counts


def _max_in_flight(pool: ReplicaPool, req: GenerateRequest) -> list[int]:
    seen = [0] * len(pool.replicas)
    lock = threading.Lock()
    original = FakeClient.generate_one

    def counting(self, req, i):
        with lock:
            seen[self.index] = max(seen[self.index], pool.replicas[self.index].inflight)
        return original(self, req, i)

    FakeClient.generate_one = counting
    try:
        pool.generate(req)
    finally:
        FakeClient.generate_one = original
    return seen


def test_bounded_routing_keeps_half_an_even_share_in_flight():
    pool, fleet = _serving()
    pool.route = "bounded"
    fleet.latency = {0: 0.01, 1: 0.01}
    assert _max_in_flight(pool, _req(32)) == [8, 8]  # half of 32 prompts over 2 replicas


def test_replicas_of_one_speed_get_every_prompt_at_once():
    """On an engine whose batches grow nearly free (a GPU), a bound would only cost time."""
    pool, fleet = _serving()
    fleet.latency = {0: 0.1, 1: 0.1}
    pool.generate(_req(32))
    assert _max_in_flight(pool, _req(32)) == [16, 16]


# ------------------------------------------------------------------ 11: seeds, sleep, counts
def test_each_replica_gets_its_own_seed():
    pool, fleet = _pool(generator__replicas=3, schedule__seed=7)
    assert [c.schedule.seed for c in fleet.configs] == [7, 8, 9]
    assert pool.cfg.schedule.seed == 7  # the run's own seed is untouched


def test_sleep_and_wake_tolerate_one_failing_replica():
    pool, fleet = _serving()
    fleet.sleep_error = {0: httpx.ConnectError("refused")}
    pool.sleep(1)  # replica 1 sleeps; replica 0 is taken out, not the call
    assert [r.up for r in pool.replicas] == [False, True] and pool.replicas[1].asleep
    fleet.wake_error = {1: _status(500)}
    pool.wake_up()  # no raise: the next generate finds who is left
    assert not pool.replicas[1].up and not pool.replicas[1].asleep


def test_sleep_raises_when_no_replica_has_sleep_mode():
    pool, fleet = _serving()
    fleet.sleep_error = {0: _status(404), 1: _status(404)}
    with pytest.raises(httpx.HTTPStatusError):
        pool.sleep(1)  # the loop then trains awake
    assert all(r.up for r in pool.replicas)


def test_evaluation_prompts_are_not_counted_as_training_prompts():
    pool, fleet = _serving()
    pool.for_eval().generate(_req(6))
    assert sum(pool.take_counts().values()) == 0
    pool.generate(_req(6))
    assert sum(pool.take_counts().values()) == 6


def test_replica_notes_of_a_failed_run_are_kept(tmp_path, monkeypatch):
    """The scheduler records what the replicas went through even when the run then fails."""
    from orchestrator.service import scheduler as sched_mod
    from orchestrator.service.store import RunStore

    cfg = _cfg(tracking__backends=[], eval__enabled=False)
    loop = SimpleNamespace(cfg=cfg, state=SimpleNamespace(step=0), checkpoint=lambda root: root)

    def step():
        raise ValueError("a bug, not a process fault")

    loop.step = step
    handle = SimpleNamespace(loop=loop, checkpoints=tmp_path / "ckpt", close=lambda: None,
                             sync=SimpleNamespace(served=None))
    monkeypatch.setattr(sched_mod, "prepare_run", lambda *a, **k: handle)
    events = ["generator replica 1 (http://x) failed (ConnectError: refused); restarting it"]
    stack = SimpleNamespace(pool=None, client=None,
                            generator_events=lambda: [events.pop()] if events else [])
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run(cfg.name, cfg.model_dump(mode="json"), cfg.schedule.steps)
    sched_mod.Scheduler(store, stack, tmp_path / "work")._run(run_id)
    assert store.get(run_id).status == "failed"
    notes = [e.data["message"] for e in store.events(run_id) if e.kind == "note"]
    assert any("replica 1" in n for n in notes), notes
