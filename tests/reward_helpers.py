"""Helpers of the reward tests: a verifier served on 127.0.0.1 (the `http` reward's other end)
and a fake installed plugin (a dist-info of its own on sys.path, registering
tests/reward_plugins.py under `mathrl.rewards`)."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PLUGINS = {
    "flaky": "reward_plugins:flaky",
    "with_parts": "reward_plugins:with_parts",
    "nan_score": "reward_plugins:nan_score",
    "text_score": "reward_plugins:text_score",
    "exits": "reward_plugins:exits",
    "bad_options_attr": "reward_plugins:bad_options_attr",
    "not_importable": "reward_plugins_missing:fn",
    "mean": "reward_plugins:with_parts",
}


def install_fake_plugin(root: Path) -> Path:
    """A dist-info folder under `root` registering PLUGINS; put `root` on sys.path to
    "install" it (workers spawned later inherit the parent's sys.path)."""
    info = root / "mathrl_test_rewards-0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mathrl-test-rewards\n"
                                   "Version: 0.0\n")
    (info / "entry_points.txt").write_text(
        "[mathrl.rewards]\n" + "".join(f"{k} = {v}\n" for k, v in PLUGINS.items()))
    return root


def with_fake_plugin(root: Path):
    """Context-free install for module-scoped fixtures: returns the undo function."""
    install_fake_plugin(root)
    sys.path.insert(0, str(root))
    import importlib

    importlib.invalidate_caches()
    return lambda: sys.path.remove(str(root))


class Verifier:
    """A verifier over HTTP: GET answers 200; POST {"items": [...]} answers {"scores": [...]}
    from `score(item)` after `delay_s`, or `fail_status` to the first `fail_first` POSTs.
    Records every batch and the most requests it held at once."""

    def __init__(self, score: Callable[[dict], object] = lambda item: 1.0, *,
                 fail_first: int = 0, fail_status: int = 500, delay_s: float = 0.0):
        self.score, self.fail_first, self.fail_status = score, fail_first, fail_status
        self.delay_s = delay_s
        self.batches: list[list[dict]] = []
        self.posts = 0
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        verifier = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet test output
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"ok": True})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with verifier._lock:
                    verifier.posts += 1
                    n = verifier.posts
                    verifier.in_flight += 1
                    verifier.max_in_flight = max(verifier.max_in_flight, verifier.in_flight)
                try:
                    time.sleep(verifier.delay_s)
                    if n <= verifier.fail_first:
                        return self._send(verifier.fail_status, {"error": "try again"})
                    with verifier._lock:
                        verifier.batches.append(body["items"])
                    self._send(200, {"scores": [verifier.score(i) for i in body["items"]]})
                finally:
                    with verifier._lock:
                        verifier.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/score"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Verifier:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
