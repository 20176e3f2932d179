"""Ask the policy being trained a question: one chat completion from the generator, under the
stable alias that always names the active run's newest policy (the base model otherwise)."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.service.api.deps import ServiceDep
from services.rewards import extract_answer

router = APIRouter(prefix="/policy", tags=["policy"])


class AskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4000)
    """The user message, sent as is (add "put the final answer within \\boxed{}" to ask for
    the trained format)."""
    max_tokens: int = Field(256, ge=1, le=2048)
    """Longest answer, in tokens."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """0: greedy."""


class AskOut(BaseModel):
    model: str
    """The served model name that answered (the alias while a run's policy is served)."""
    answer: str
    extracted: str | None
    """The final answer the reward's extractor reads from it (None: none found)."""


@router.post("/ask", response_model=AskOut, responses={
    502: {"description": "the generator failed or could not be reached"},
    503: {"description": "no generator: the API runs without a stack"}})
async def ask(body: AskIn, service: ServiceDep) -> AskOut:
    stack = service.stack
    if stack is None or getattr(stack, "client", None) is None:
        raise HTTPException(status_code=503, detail="no generator: the API runs without a stack")
    url = stack.client.base_url
    # With MATHRL_API_TOKEN set, vLLM's /v1 routes want the same token (the stack's api_key).
    key = getattr(stack, "api_key", None)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as http:
        try:
            models = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
            alias = stack.cfg.generator.alias
            model = alias if alias in models else models[0]
            r = await http.post("/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": body.question}],
                "max_tokens": body.max_tokens, "temperature": body.temperature})
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
            raise HTTPException(status_code=502, detail=f"generator unreachable: {e}") from e
    if r.status_code >= 400:
        raise HTTPException(status_code=502, detail=f"generator answered {r.status_code}: "
                                                    f"{r.text[:300]}")
    text = r.json()["choices"][0]["message"]["content"] or ""
    return AskOut(model=model, answer=text, extracted=extract_answer(text))
