"""Reading compose files as Compose does, without Docker: env files, `${VAR:-default}`
substitution, service commands (including the simple commands of an `sh -c` script), options,
mounts and ports. Shared by tests/test_compose.py and tests/test_compose_profiles.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a Compose env file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $$, $VAR, ${VAR}, ${VAR:-x}, ${VAR-x}, ${VAR:?e}."""

    def repl(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        value = env.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is None:
            if op and op.endswith("?"):
                raise AssertionError(f"required variable {name} is unset: {arg}")
            return arg if op else ""
        return value

    return _VAR.sub(repl, text)


def resolve(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(x, env) for x in node]
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    return node


def environment(svc: dict) -> dict[str, str]:
    envs = svc.get("environment") or {}
    if isinstance(envs, list):
        envs = dict(item.partition("=")[::2] for item in envs)
    return {k: "" if v is None else str(v) for k, v in envs.items()}


def argv(value) -> list[str]:
    """A command/entrypoint as an argv list (Compose splits strings shell-like)."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(x) for x in value]


_SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "\n"}
_PREFIXES = {"exec", "until", "while", "if", "then", "do", "else", "elif", "!", "time"}
_CLOSERS = {"done", "fi", "esac"}


def shell_commands(svc: dict) -> list[list[str]]:
    """Every simple command a service runs: its argv, or the commands of its `sh -c` script."""
    args = argv(svc.get("entrypoint")) + argv(svc.get("command"))
    if len(args) >= 3 and PurePosixPath(args[0]).name in ("sh", "bash") and args[1] == "-c":
        lexer = shlex.shlex(args[2], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands, current = [], []
        for tok in lexer:
            if tok in _SEPARATORS:
                commands.append(current)
                current = []
            elif not current and tok in _PREFIXES:
                continue
            else:
                current.append(tok)
        commands.append(current)
        return [c for c in commands if c and c[0] not in _CLOSERS]
    return [args] if args else []


def option(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` (the last one wins, as in Click)."""
    value = None
    for i, tok in enumerate(args):
        if tok == name and i + 1 < len(args):
            value = args[i + 1]
        elif tok.startswith(name + "="):
            value = tok[len(name) + 1:]
    return value


def mathrl_commands(services: dict) -> list[tuple[str, list[str]]]:
    return [(name, cmd) for name, svc in services.items()
            for cmd in shell_commands(svc) if PurePosixPath(cmd[0]).name == "mathrl"]


def ray_starts(services: dict) -> list[tuple[str, list[str]]]:
    return [(name, cmd) for name, svc in services.items()
            for cmd in shell_commands(svc) if cmd[:2] == ["ray", "start"]]


def mathrl_up(services: dict) -> list[str]:
    ups = [cmd for name, cmd in mathrl_commands(services)
           if name == "orchestrator" and len(cmd) > 1 and cmd[1] == "up"]
    assert len(ups) == 1, "the orchestrator must run `mathrl up` exactly once"
    return ups[0]


def mounts(svc: dict) -> dict[str, str]:
    """target path -> source (volume name or host path) of a service's volumes."""
    out = {}
    for vol in svc.get("volumes") or []:
        if isinstance(vol, dict):
            out[vol["target"]] = vol.get("source", "")
        else:
            parts = vol.split(":")
            if len(parts) == 1:
                out[parts[0]] = ""
            else:
                out[parts[1]] = parts[0]
    return out


def container_ports(svc: dict) -> list[int]:
    out = []
    for port in svc.get("ports") or []:
        if isinstance(port, dict):
            out.append(int(port["target"]))
        else:
            out.append(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return out
