"""Bounds on reward functions that misbehave: a verifier that trickles its answer or never
ends it, a plugin that leaves children behind, workers that never start, and what the
allowlist of verifier hosts means."""

from __future__ import annotations

import operator
import os
import signal
import socket
import threading
import time

import pytest

from services.rewards.engine import RewardEngine, Sample
from services.rewards.http_verifier import HttpOptions, HttpVerifier, VerifierTimeout, probe
from services.rewards.registry import Resolved


class Trickle:
    """A raw HTTP server on 127.0.0.1 that answers every request with `head` then `body`,
    `step` bytes every `every_s`, for at most `for_s` seconds (then it hangs up)."""

    def __init__(self, head: bytes, body: bytes = b"", *, step: int = 1, every_s: float = 0.05,
                 for_s: float = 6.0, body_repeat: int = 1):
        self.head, self.body, self.step, self.every_s = head, body, step, every_s
        self.for_s, self.body_repeat = for_s, body_repeat
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/score"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        end = time.monotonic() + self.for_s
        try:
            conn.recv(65536)
            data = memoryview(self.head + self.body * self.body_repeat)
            for i in range(0, len(data), self.step):
                if time.monotonic() > end:
                    break
                conn.sendall(data[i : i + self.step])
                if self.every_s:
                    time.sleep(self.every_s)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"


def one(url: str, **options) -> tuple[object, float]:
    verifier = HttpVerifier(HttpOptions(url=url, retries=0, **options), backoff_s=0)
    t0 = time.monotonic()
    try:
        (got,) = verifier.score([{"prompt": "q", "completion": "c", "gold": "1",
                                  "metadata": {}}])
    finally:
        verifier.close()
    return got, time.monotonic() - t0


def test_a_trickling_verifier_times_out_within_its_limit():
    body = b'{"scores": [1.0]}' + b" " * 10_000
    head = OK + f"content-length: {len(body)}\r\n\r\n".encode()
    server = Trickle(head, body, every_s=0.05)  # a byte every 50 ms: no single read waits
    try:
        got, took = one(server.url, timeout_s=0.5)
        assert isinstance(got, VerifierTimeout) and took < 2.0
        t0 = time.monotonic()  # the submit-time GET: same bound
        assert "unreachable" in probe(server.url, 0.5) and time.monotonic() - t0 < 2.0
    finally:
        server.close()


def test_an_endless_answer_is_cut_off():
    # No content-length, connection: close: the body runs until the server stops (never).
    head = OK + b"connection: close\r\n\r\n"
    server = Trickle(head, b'{"scores": [1.0' + b" " * 65536, step=65536, every_s=0,
                     body_repeat=1000)  # ~64 MiB, fast
    try:
        got, took = one(server.url, timeout_s=20.0)
        assert isinstance(got, ValueError) and "bytes" in str(got) and took < 10.0
    finally:
        server.close()


class _Hung:
    """A batch verifier that ignores its own bound."""

    def __init__(self, options):
        pass

    def score(self, items):
        time.sleep(3.0)
        return [(1.0, {})] * len(items)

    def time_bound_s(self, n_items: int) -> float:
        return 0.3

    def close(self) -> None:
        pass


def test_the_engine_does_not_wait_on_a_verifier_past_its_bound():
    def fn(*args):  # never called: the engine uses `batch`
        raise AssertionError

    fn.batch = _Hung
    engine = RewardEngine([Resolved("judge", 1.0, "x:y", fn, None, "batch", False)],
                          timeout_s=1.0, num_workers=1)
    try:
        t0 = time.monotonic()
        res = engine.score([Sample("q", "c", "1"), Sample("q", "d", "1")])
        assert time.monotonic() - t0 < 2.0
        assert res.timeouts == 2 and res.totals == [0.0, 0.0]
    finally:
        engine.close()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (not yet reaped by whoever inherited it) is gone too: it runs nothing.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_timed_out_plugin_takes_its_children_with_it(tmp_path):
    from services.rewards.pool import GraderPool

    pid_file = tmp_path / "child.pid"
    with GraderPool(1, timeout_s=1.0, _work_fn=operator.eq) as pool:
        (out,) = pool.call([("reward_plugins:spawns_and_hangs",
                             (str(pid_file), "c", "1", {}, None, None))])
        assert out.timed_out
        pid = int(pid_file.read_text())
        deadline = time.monotonic() + 3
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = not _gone(pid)
        if alive:
            os.kill(pid, signal.SIGKILL)
    assert not alive, "the plugin's child outlived its killed worker"


def test_workers_that_never_start_fail_later_calls_at_once(tmp_path, monkeypatch):
    from services.rewards.pool import GraderPool

    (tmp_path / "reward_plugin_hangs_on_import.py").write_text(
        "import time\ntime.sleep(3600)\ndef fn(*a):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers inherit sys.path
    target = "reward_plugin_hangs_on_import:fn"
    item = (target, ("q", "c", "1", {}, None, None))
    with GraderPool(1, timeout_s=1.0, start_timeout_s=0.3, preload=(target,),
                    _work_fn=operator.eq) as pool:
        (first,) = pool.call([item])
        assert "fail to start" in first.error
        t0 = time.monotonic()
        (again,) = pool.call([item])
        assert "fail to start" in again.error and time.monotonic() - t0 < 0.2


def test_a_run_whose_reward_fails_to_start_leaves_no_learner(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import transformers
    from conftest import ROOT

    import orchestrator.run.stack as stack_mod
    from services.config import load_config

    cfg = load_config(ROOT / "configs" / "tiny-cpu.toml")
    spawned, killed, closed = [], [], []
    monkeypatch.setattr(stack_mod, "resolve_model_path", lambda p: "/model")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda p: None)
    monkeypatch.setattr(stack_mod, "training_problems", lambda c: [])
    monkeypatch.setattr(stack_mod, "PromptCache",
                        SimpleNamespace(from_config=lambda *a, **k: None))
    monkeypatch.setattr(stack_mod.runtime, "spawn_learner",
                        lambda *a, **k: spawned.append(1) or "learner")
    monkeypatch.setattr(stack_mod, "ray", SimpleNamespace(kill=killed.append))
    stack = SimpleNamespace(model_path="/model", pool=None, client=None,
                            generator_model_path=None)

    def broken_scorer(reward, tokenizer):
        raise RuntimeError("no such reward function")

    monkeypatch.setattr(stack_mod, "Scorer", broken_scorer)
    with pytest.raises(RuntimeError, match="no such reward"):
        stack_mod.prepare_run(stack, cfg, tmp_path / "run")
    assert spawned == []  # the scorer fails before a learner (a GPU) is taken

    monkeypatch.setattr(stack_mod, "Scorer",
                        lambda r, t: SimpleNamespace(close=lambda: closed.append(1)))

    def broken_sync(*a, **k):
        raise RuntimeError("sync refused")

    monkeypatch.setattr(stack_mod, "PolicySync", broken_sync)
    with pytest.raises(RuntimeError, match="sync refused"):
        stack_mod.prepare_run(stack, cfg, tmp_path / "run")
    assert spawned == [1] and killed == ["learner"] and closed == [1]


def test_a_queued_run_is_refused_a_host_removed_since_it_was_submitted(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from conftest import ROOT

    import orchestrator.service.scheduler as scheduler_mod
    from orchestrator.service.store import RunStore
    from services.config import load_config

    cfg = load_config(ROOT / "configs" / "tiny-cpu.toml").model_dump(mode="json")
    cfg["reward"] = {"num_workers": 1, "functions": [
        {"name": "http", "options": {"url": "http://127.0.0.1:8000/score"}}]}
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run("x", cfg, 2)  # accepted when 127.0.0.1:8000 was listed

    def prepare_run(*a, **k):
        raise AssertionError("the run started")

    monkeypatch.setattr(scheduler_mod, "prepare_run", prepare_run)
    stack = SimpleNamespace(generator_events=lambda: [])
    scheduler = scheduler_mod.Scheduler(store, stack, tmp_path / "work",
                                        reward_hosts=("127.0.0.1",))  # :80 only now
    scheduler._run(run_id)
    run = store.get(run_id)
    assert run.status == "failed" and "MATHRL_REWARD_HOSTS" in run.error, run.error
    assert "no longer" in run.error
    store.close()


def test_numpy_scalars_are_scores():
    import numpy as np

    from services.rewards.functions import RewardValueError, to_outcome

    assert to_outcome(np.float32(0.5)) == (0.5, {})
    assert to_outcome((np.int64(1), {"part": np.float64(0.25)})) == (1.0, {"part": 0.25})
    assert to_outcome(True) == (1.0, {})
    for bad in ("1", 1j, np.float32("nan")):
        with pytest.raises(RewardValueError):
            to_outcome(bad)
