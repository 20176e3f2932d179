"""What the CLI prints when a verb fails: one or two plain lines and an exit code.

A person at the terminal needs to know what went wrong and what to do next, not where in the
code it happened; the traceback is still there with `mathrl --debug VERB ...`.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from orchestrator.cli.client import ApiError
from orchestrator.service.invalid_file import InvalidFile

API_HINT = "start it with `mathrl up`, or point --url / MATHRL_URL at a running one"
# What `pip install mathrl` leaves out (the `service`, `cpu` and `gpu` extras bring it): a
# verb that reaches one of these in a client-only install gets the install line, not a
# ModuleNotFoundError traceback. Top-level import names, not package names.
SERVICE_MODULES = frozenset({
    "torch", "ray", "vllm", "transformers", "peft", "fastapi", "uvicorn", "pydantic_settings",
    "math_verify", "safetensors", "tokenizers", "gguf", "bitsandbytes", "starlette",
    "huggingface_hub", "numpy",
})
INSTALL_HINT = "pip install 'mathrl[cpu]' (a CPU, Python 3.11) or 'mathrl[gpu]' (CUDA)"


@dataclass
class Failure:
    message: str
    """Plain lines, no traceback."""
    code: int
    """Exit code: 1 for the service side (unreachable, HTTP errors), 2 for local input."""


def _field(loc) -> str:
    """A FastAPI/pydantic error location as a dotted config path (`rollout.group_size`)."""
    parts = [str(p) for p in (loc or [])]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "(config)"


def validation_lines(errors: list[dict], limit: int = 5) -> list[str]:
    """`field: message` per error, the first `limit` of them."""
    lines = [f"{_field(e.get('loc'))}: {e.get('msg', e)}" for e in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more")
    return lines


def _api(e: ApiError) -> str:
    detail = e.detail
    if e.status == 422 and isinstance(detail, list):
        return "the server rejected the config (HTTP 422):\n  " + "\n  ".join(
            validation_lines(detail))
    if e.status == 401:
        return ("the API needs a token (HTTP 401): set MATHRL_API_TOKEN to the one the "
                "server was started with")
    text = detail if isinstance(detail, str) else str(detail)
    return f"{text} (HTTP {e.status})"


def require(*modules: str) -> None:
    """Fail now, as `describe` words it, when a service module is missing: for verbs that
    would otherwise get far first (`demo` builds a model, `grade`'s workers import
    math-verify in child processes and would mark every answer wrong)."""
    import importlib.util

    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def describe(exc: BaseException) -> Failure | None:
    """The plain-language failure for `exc`, or None when there is nothing to add to it."""
    if isinstance(exc, ApiError):
        return Failure(_api(exc), 1)
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in SERVICE_MODULES:
        return Failure(f"this verb needs the mathrl service, which this install lacks (no "
                       f"module {exc.name!r}): {INSTALL_HINT}", 2)
    if isinstance(exc, httpx.TransportError):
        url = _url(exc)
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return Failure(f"cannot reach the mathrl API at {url} ({_reason(exc)});\n"
                           f"{API_HINT}", 1)
        return Failure(f"lost the connection to the mathrl API at {url} ({_reason(exc)})", 1)
    if isinstance(exc, InvalidFile):
        return Failure(str(exc), 2)
    if isinstance(exc, tomllib.TOMLDecodeError):
        return Failure(f"not valid TOML: {exc}", 2)
    if isinstance(exc, ValidationError):
        return Failure("invalid config:\n  " + "\n  ".join(
            validation_lines(exc.errors(include_url=False))), 2)
    if isinstance(exc, FileNotFoundError):
        return Failure(f"no such file: {exc.filename}", 2)
    if isinstance(exc, IsADirectoryError | NotADirectoryError | PermissionError):
        return Failure(f"cannot read {exc.filename}: {exc.strerror}", 2)
    return None


def _url(exc: httpx.TransportError) -> str:
    try:
        u = exc.request.url
    except RuntimeError:  # raised by httpx when the error carries no request
        return "the configured URL"
    return f"{u.scheme}://{u.netloc.decode()}"


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    # httpx wraps the socket error: "[Errno 111] Connection refused" -> "connection refused"
    if "] " in text:
        text = text.split("] ", 1)[1]
    return text[:1].lower() + text[1:]


def pop_debug(argv: list[str]) -> tuple[list[str], bool]:
    """`--debug` anywhere before a `--` (people add it after the verb), or MATHRL_DEBUG=1."""
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    rest = [a for i, a in enumerate(argv) if not (a == "--debug" and i < end)]
    return rest, debug or os.environ.get("MATHRL_DEBUG", "") not in ("", "0", "false")


def run_cli(app, argv: list[str]) -> None:
    """Run the typer `app`; a known failure becomes plain lines on stderr and its exit code."""
    args, debug = pop_debug(argv)
    try:
        app(args=args, prog_name="mathrl")
    except Exception as e:  # noqa: BLE001 - every failure reaches the person as a message
        if debug:
            raise  # typer prints the traceback
        failure = describe(e) or Failure(
            f"{type(e).__name__}: {e}\n(run `mathrl --debug ...` for the traceback)", 1)
        print(f"error: {failure.message}", file=sys.stderr)
        raise SystemExit(failure.code) from None
