"""The `http` reward: a verifier the user runs (a code sandbox, a judge model) scores batches
of completions over HTTP.

Wire format (JSON): ``POST <url>`` with ``{"items": [{"prompt", "completion", "gold",
"metadata"}, ...]}`` (at most `batch_size` items) -> ``200 {"scores": [...]}``, one entry per
item in the same order: a number, or ``{"score": number, "parts": {name: number}}`` (parts
become metrics like any reward function's). A 5xx, a 429, a timeout or a broken connection is
retried (`retries` times, backing off); any other 4xx or a malformed answer is not. Items of a
batch that still fails score 0 and count in `reward/errors` / `reward/timeouts`.

Safety: a run names the URL, the operator names the hosts (`MATHRL_REWARD_HOSTS`: `host:port`,
or a bare `host` for its scheme's default port only), and
`POST /runs` refuses any other host (`host_problem`) before a single request is made; the
client ignores proxy variables and does not follow redirects, so the host checked is the host
reached. At submit the URL must also answer a GET (`probe`: any status below 500 counts, so
a POST-only route answering 405 is reachable) within a few seconds. `mathrl train` (a run one
starts oneself, from one's own config) checks neither.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.rewards.functions import to_outcome

__all__ = ["HttpOptions", "HttpVerifier", "VerifierTimeout", "host_problem", "http_reward",
           "probe"]

PROBE_TIMEOUT_S = 5.0
"""Longest the submit-time reachability check waits (a request handler is waiting on it)."""
MAX_BODY_BYTES = 8 << 20
"""Largest answer read from a verifier; a longer one fails its batch."""


class HttpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    url: str = Field(min_length=8, max_length=2000)
    """Where batches are POSTed (`http://` or `https://`); its host must be in the service's
    MATHRL_REWARD_HOSTS, and it must answer a GET when the run is submitted."""
    timeout_s: float = Field(10.0, gt=0.0, le=120.0)
    """Limit on one request (connect, send, wait and read), in seconds."""
    retries: int = Field(2, ge=0, le=5)
    """Further attempts after a timeout, a lost connection, a 5xx or a 429."""
    max_concurrency: int = Field(4, ge=1, le=32)
    """Requests in flight at once."""
    batch_size: int = Field(32, ge=1, le=1024)
    """Completions per request."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:  # stored with the run and shown by the API
            raise ValueError("must not carry credentials")
        try:
            port = parts.port
        except ValueError:  # `:abc`, `:99999`
            port = 0
        if port == 0:
            raise ValueError("its port must be a number from 1 to 65535")
        return v


class VerifierTimeout(Exception):
    """The verifier did not answer within `timeout_s` on any attempt."""


# httpx's timeouts bound each connect / read / write, not a request: a verifier trickling a
# byte every few seconds would never time out. So every socket operation of a request is
# also bounded by the time left to the request's one wall-clock deadline (per thread: a sync
# request runs in the thread that makes it).
_deadline = threading.local()


def _bound(timeout: float | None) -> float | None:
    end = getattr(_deadline, "at", None)
    if end is None:
        return timeout
    left = max(end - time.monotonic(), 1e-3)  # spent: the next socket call times out
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bound(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bound(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _bound(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _DeadlineStream(super().connect_tcp(host, port, _bound(timeout), local_address,
                                                   socket_options))


def _client(timeout_s: float) -> httpx.Client:
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx has no public hook for a per-request wall-clock deadline; httpcore's pool takes a
    # network backend (public in httpcore, private behind httpx). If a later httpx moves it,
    # the per-read timeouts remain and the engine's own bound still keeps the step from hanging.
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = _DeadlineBackend()
    return httpx.Client(transport=transport, trust_env=False, follow_redirects=False,
                        timeout=timeout_s)


def _request(client: httpx.Client, method: str, url: str, limit_s: float, *,
             read_body: bool = True, **kwargs: Any) -> tuple[int, bytes]:
    """(status, body) of one request, all of it within `limit_s` of wall-clock time (else
    httpx.TimeoutException) and its body at most MAX_BODY_BYTES (else ValueError)."""
    _deadline.at = time.monotonic() + limit_s
    try:
        with client.stream(method, url, **kwargs) as r:
            body = bytearray()
            if read_body:
                for chunk in r.iter_bytes():  # decoded: the cap bounds what we hold
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise ValueError(f"the verifier's answer is over {MAX_BODY_BYTES} bytes")
                    if time.monotonic() > _deadline.at:
                        raise httpx.ReadTimeout(f"no full answer within {limit_s} s")
            return r.status_code, bytes(body)
    finally:
        _deadline.at = None


def _allowed(entry: str) -> tuple[str, int | None] | None:
    parts = urlsplit("//" + entry.strip())
    try:
        return (parts.hostname, parts.port) if parts.hostname else None
    except ValueError:  # a port that is not a number: the entry matches nothing
        return None


def host_problem(url: str, allowed: Sequence[str]) -> str | None:
    """Why `url` may not be reached under the allowed host list (`host` or `host:port`
    entries, as MATHRL_REWARD_HOSTS holds them), or None when it may. A bare `host` allows
    only the URL scheme's default port (80 for http, 443 for https): never every port of a
    host that also runs vLLM, this API and Ray."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    default = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default
    except ValueError:
        return f"the port of {url} is not a number from 1 to 65535"
    for entry in filter(None, map(_allowed, allowed)):
        if entry[0].lower() == host and (entry[1] or default) == port:
            return None
    listed = ", ".join(a for a in allowed if a.strip()) or "none"
    return (f"host {host}:{port} is not allowed: runs may reach only the hosts the service "
            f"lists in MATHRL_REWARD_HOSTS (now: {listed})")


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when `url` answers a GET with a status below 500 within `timeout_s`, else why."""
    try:
        with _client(timeout_s) as c:
            status, _ = _request(c, "GET", url, timeout_s, read_body=False)
    except httpx.HTTPError as e:
        return f"the verifier at {url} is unreachable ({type(e).__name__}: {e})"
    if status >= 500:
        return f"the verifier at {url} answered {status} to a GET"
    return None


def submit_check(options: HttpOptions, allowed_hosts: Sequence[str]) -> tuple[str, str] | None:
    """(option, message) when a submitted run may not use this verifier, else None."""
    if (msg := host_problem(options.url, allowed_hosts)) is not None:
        return "url", msg  # refused before any connection: the host list is the whole point
    if (msg := probe(options.url, min(options.timeout_s, PROBE_TIMEOUT_S))) is not None:
        return "url", msg
    return None


def _parse_entry(entry: Any) -> tuple[float, dict[str, float]]:
    if isinstance(entry, dict):
        return to_outcome((entry.get("score"), entry.get("parts") or {}))
    return to_outcome(entry)


class HttpVerifier:
    """Scores samples through one verifier; one instance per run (its connection pool)."""

    def __init__(self, options: HttpOptions, *, backoff_s: float = 0.25):
        self.options, self.backoff_s = options, backoff_s
        self._client = _client(options.timeout_s)
        self._threads = ThreadPoolExecutor(options.max_concurrency,
                                           thread_name_prefix="mathrl-verifier")

    def score(self, items: list[dict[str, Any]]) -> list[tuple[float, dict] | Exception]:
        """One outcome per item (a `(score, parts)` pair, or the exception that cost it its
        score), same order. Never raises; bounded by batches x attempts x `timeout_s`."""
        n = self.options.batch_size
        batches = [items[i : i + n] for i in range(0, len(items), n)]
        out: list[tuple[float, dict] | Exception] = []
        for result in self._threads.map(self._batch, batches):
            out += result
        return out

    def time_bound_s(self, n_items: int) -> float:
        """The longest `score(n_items items)` can take (every batch one after another, every
        attempt timing out, every back-off), plus slack."""
        batches = max(1, -(-n_items // self.options.batch_size))
        attempts = self.options.retries + 1
        backoff = sum(min(self.backoff_s * 2 ** a, 2.0) for a in range(attempts - 1))
        return batches * (attempts * self.options.timeout_s + backoff) + 5.0

    def _batch(self, items: list[dict[str, Any]]) -> list[tuple[float, dict] | Exception]:
        try:
            scores = self._post({"items": items})
        except Exception as e:  # noqa: BLE001 - the batch's items fail, never the step
            return [e] * len(items)
        if len(scores) != len(items):
            err = ValueError(f"the verifier sent {len(scores)} scores for {len(items)} items")
            return [err] * len(items)
        out: list[tuple[float, dict] | Exception] = []
        for entry in scores:
            try:
                out.append(_parse_entry(entry))
            except Exception as e:  # noqa: BLE001 - one bad entry costs only its item
                out.append(e)
        return out

    def _post(self, body: dict) -> list:
        # default=str: metadata from a Hugging Face dataset may hold dates and the like.
        content = json.dumps(body, default=str).encode()
        last: Exception | None = None
        for attempt in range(self.options.retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 2.0))
            try:
                status, text = _request(self._client, "POST", self.options.url,
                                        self.options.timeout_s, content=content,
                                        headers={"content-type": "application/json"})
            except httpx.TimeoutException as e:
                last = VerifierTimeout(f"no answer within {self.options.timeout_s} s ({e})")
                continue
            except httpx.TransportError as e:
                last = e
                continue
            if status >= 500 or status == 429:
                last = RuntimeError(f"the verifier answered {status}")
                continue
            if status >= 400:  # our request is what it refuses: trying again won't help
                raise RuntimeError(f"the verifier answered {status}")
            answer = json.loads(text)
            scores = answer.get("scores") if isinstance(answer, dict) else None
            if not isinstance(scores, list):
                raise ValueError('the verifier\'s answer has no "scores" list')
            return scores
        raise last or RuntimeError("no attempt made")

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
        self._client.close()


def http_reward(prompt: str, completion: str, gold: str, metadata: dict[str, Any],
                options: HttpOptions) -> tuple[float, dict[str, float]]:
    """Scores from a verifier you run, over HTTP: batches of {prompt, completion, gold,
    metadata} are POSTed to `url`, which answers {"scores": [...]} (a number, or {"score",
    "parts"} per item). Hosts must be allowed by the service (MATHRL_REWARD_HOSTS)."""
    verifier = HttpVerifier(options)
    try:
        (result,) = verifier.score([{"prompt": prompt, "completion": completion, "gold": gold,
                                     "metadata": metadata}])
    finally:
        verifier.close()
    if isinstance(result, Exception):
        raise result
    return result


http_reward.options = HttpOptions
# In the orchestrator, a batch at a time through `HttpVerifier`: network I/O under its own
# timeouts, so no worker process (and no per-completion request) is needed.
http_reward.runs_in = "batch"
http_reward.batch = HttpVerifier
http_reward.submit_check = submit_check
# When the service starts a queued or resumed run: the host list may have changed since.
http_reward.start_check = lambda options, allowed_hosts: host_problem(options.url,
                                                                      allowed_hosts)
