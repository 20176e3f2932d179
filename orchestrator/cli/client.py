"""HTTP client of the orchestrator API, typed with the same schemas the server uses."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx

from orchestrator.service.api.schemas import (
    EvalJobPublic,
    EvalRequest,
    Event,
    MetricsPublic,
    RunCreated,
    RunPublic,
    RunsPublic,
)

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

    def export(self, run_id: str, dest, *, step: int | None = None, merge: bool = False,
               wait_s: float = 1800.0) -> dict:
        """Stream `GET /runs/{id}/export`'s tar into the file `dest`; returns {"step", "kind",
        "base"} of what the server exported. `wait_s`: how long to wait for the first bytes (a
        merge runs before any are sent)."""
        from urllib.parse import unquote

        params: dict = {"merge": "true" if merge else "false"}
        if step is not None:
            params["step"] = step
        with self._http.stream("GET", f"/runs/{run_id}/export", params=params,
                               timeout=httpx.Timeout(30.0, read=wait_s)) as r:
            if r.status_code >= 400:
                r.read()
                self._check(r)
            # A connection lost mid-way raises (httpx checks Content-Length), so `dest` is
            # never taken for a whole archive when it is not.
            with open(dest, "wb") as f:
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
            return {"step": int(r.headers["x-mathrl-step"]), "kind": r.headers["x-mathrl-export"],
                    "base": unquote(r.headers["x-mathrl-base"])}

    def request_eval(self, run_id: str, request: EvalRequest) -> EvalJobPublic:
        r = self._check(self._http.post(f"/runs/{run_id}/evals",
                                        json=request.model_dump(exclude_none=True)))
        return EvalJobPublic.model_validate(r.json())

    def eval_job(self, run_id: str, eval_id: str) -> EvalJobPublic:
        r = self._check(self._http.get(f"/runs/{run_id}/evals/{eval_id}"))
        return EvalJobPublic.model_validate(r.json())

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
