"""HTTP client of the orchestrator API, typed with the same schemas the server uses."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx

from orchestrator.service.api.schemas import Event, MetricsPublic, RunCreated, RunPublic, RunsPublic

DEFAULT_URL = "http://127.0.0.1:8000"


def default_url() -> str:
    return os.environ.get("MATHRL_URL", DEFAULT_URL)


def default_token() -> str | None:
    """`MATHRL_API_TOKEN`, the same variable the server reads (None when unset or empty)."""
    return os.environ.get("MATHRL_API_TOKEN") or None


class ApiError(RuntimeError):
    def __init__(self, status: int, detail):
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {detail}")


class MathrlClient:
    def __init__(self, url: str | None = None, *, timeout_s: float = 30.0,
                 token: str | None = None, stream_idle_s: float = 60.0):
        """`token`: the API's bearer token (default `MATHRL_API_TOKEN`). `stream_idle_s`: an
        event stream that sends nothing for this long is dead (the server sends a keep-alive
        every 15 s), so a follower fails instead of waiting forever."""
        self.url = (url or default_url()).rstrip("/")
        token = token or default_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)
        self._stream_idle_s = stream_idle_s

    def close(self) -> None:
        self._http.close()

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ApiError(r.status_code, detail)
        return r

    def submit(self, config: dict) -> RunCreated:
        return RunCreated.model_validate(self._check(self._http.post("/runs", json=config)).json())

    def runs(self) -> list[RunPublic]:
        return RunsPublic.model_validate(self._check(self._http.get("/runs")).json()).runs

    def run(self, run_id: str) -> RunPublic:
        return RunPublic.model_validate(self._check(self._http.get(f"/runs/{run_id}")).json())

    def metrics(self, run_id: str) -> MetricsPublic:
        r = self._check(self._http.get(f"/runs/{run_id}/metrics"))
        return MetricsPublic.model_validate(r.json())

    def cancel(self, run_id: str) -> RunPublic:
        r = self._check(self._http.post(f"/runs/{run_id}/cancel"))
        return RunPublic.model_validate(r.json())

    def resume(self, run_id: str) -> RunPublic:
        r = self._check(self._http.post(f"/runs/{run_id}/resume"))
        return RunPublic.model_validate(r.json())

    def health(self) -> dict:
        return self._check(self._http.get("/health")).json()

    def events(self, run_id: str, *, last_event_id: int | None = None) -> Iterator[Event]:
        """Follow the run's SSE stream until it ends (terminal status)."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id else {}
        with self._http.stream("GET", f"/runs/{run_id}/events", headers=headers,
                               timeout=httpx.Timeout(30.0, read=self._stream_idle_s)) as r:
            if r.status_code >= 400:
                r.read()
                self._check(r)
            data: list[str] = []
            for line in r.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    yield Event.model_validate(json.loads("\n".join(data)))
                    data = []
