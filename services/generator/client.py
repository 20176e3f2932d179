"""httpx client of the vLLM server: sampling with token ids + logprobs, adapter admin calls."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from services.schemas import Completion, GenerateRequest

RETRY_DELAYS_S = (0.5, 1.0, 2.0)


class GeneratorClient:
    def __init__(self, base_url: str, *, timeout_s: float = 600.0, max_parallel: int = 64,
                 api_key: str | None = None):
        """`api_key`: the server's `--api-key` / `VLLM_API_KEY` (vLLM then refuses `/v1`
        requests without it, the runtime LoRA endpoints included)."""
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)
        self._max_parallel = max_parallel

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GeneratorClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _post(self, path: str, body: dict) -> httpx.Response:
        r = self._post_retrying(path, body)
        if r.status_code >= 400:
            raise httpx.HTTPStatusError(
                f"{path} -> {r.status_code}: {r.text[:500]}", request=r.request, response=r
            )
        return r

    def _post_retrying(self, path: str, body: dict) -> httpx.Response:
        """A dropped connection or a 502/503 is retried with backoff (0.5, 1, 2 s) before it
        counts as a generator fault; a read timeout is not (a hung server would hold each try
        for the whole timeout). Repeating a generation or an in-place adapter load is
        harmless: the first answer was never used."""
        for delay in RETRY_DELAYS_S:
            try:
                r = self._http.post(path, json=body)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                time.sleep(delay)
                continue
            if r.status_code in (502, 503):
                time.sleep(delay)
                continue
            return r
        return self._http.post(path, json=body)

    def models(self) -> list[str]:
        r = self._http.get("/v1/models")
        r.raise_for_status()
        return [m["id"] for m in r.json()["data"]]

    def max_model_len(self) -> int | None:
        """The context length the server was started with (`--max-model-len`), as its
        `/v1/models` reports it for the base model; None when it does not say."""
        r = self._http.get("/v1/models")
        r.raise_for_status()
        lens = [m["max_model_len"] for m in r.json()["data"] if m.get("max_model_len")]
        return min(lens) if lens else None

    def generate_one(self, req: GenerateRequest, i: int) -> list[Completion]:
        """The n samples of `req.prompts[i]` (one request)."""
        body = {
            "model": req.model,
            "prompt": req.prompts[i],
            "n": req.n,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "logprobs": 0,  # the sampled token's own logprob only
            "return_token_ids": True,
            "skip_special_tokens": True,
        }
        if req.stop:
            body["stop"] = req.stop
        if req.seed is not None:
            # One request per prompt, each with its own seed: a shared seed in one batched
            # request would give every prompt the same random stream.
            body["seed"] = req.seed + i
        choices = sorted(self._post("/v1/completions", body).json()["choices"],
                         key=lambda c: c["index"])
        return [
            Completion(
                token_ids=c["token_ids"],
                logprobs=[float(x) for x in c["logprobs"]["token_logprobs"]],
                text=c["text"],
                finish_reason=c.get("finish_reason"),
            )
            for c in choices
        ]

    def generate(self, req: GenerateRequest) -> list[list[Completion]]:
        """Completions grouped by prompt: `result[i]` holds the n samples of `prompts[i]`.

        Requests go out concurrently so that vLLM batches them together."""
        workers = max(1, min(self._max_parallel, len(req.prompts)))
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda i: self.generate_one(req, i), range(len(req.prompts))))

    # --- runtime LoRA (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) ---
    def load_adapter(self, name: str, path: str, *, inplace: bool = False) -> None:
        body = {"lora_name": name, "lora_path": path}
        if inplace:
            body["load_inplace"] = True
        self._post("/v1/load_lora_adapter", body)

    def unload_adapter(self, name: str) -> None:
        self._post("/v1/unload_lora_adapter", {"lora_name": name})

    # --- merged weights (VLLM_SERVER_DEV_MODE=1) ---
    def reload_weights(self) -> None:
        """Re-read the served model's weights from disk, then drop cached prefixes: the prefix
        cache is keyed on tokens, not weights, so old KV blocks would otherwise be reused."""
        self._post("/collective_rpc", {"method": "reload_weights"})
        self._post("/reset_prefix_cache", {})

    def sleep(self, level: int = 1) -> None:
        """Level 1: vLLM moves its weights to CPU RAM and drops its KV cache (dev mode,
        `--enable-sleep-mode`, CUDA only)."""
        r = self._http.post("/sleep", params={"level": str(level)})
        r.raise_for_status()

    def wake_up(self) -> None:
        r = self._http.post("/wake_up")
        r.raise_for_status()
        self._post("/reset_prefix_cache", {})

