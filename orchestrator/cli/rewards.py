"""`mathrl rewards`: the reward functions installed in this environment, with their options.

A local verb: it reads the entry points of the Python environment it runs in, which is the
service's when run where `mathrl up` runs (`docker compose exec orchestrator mathrl rewards`
in a compose stack). A run may name exactly these in `reward.functions`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer


def _type(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "|".join(json.dumps(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " | ".join(_type(p) for p in prop["anyOf"])
    return prop.get("type", "any")


def render(rows: list[dict[str, Any]]) -> list[str]:
    """Each function: its name, the distribution that installs it and its docstring's first
    paragraph, then one line per option (type, default or "required", description)."""
    lines: list[str] = []
    for row in rows:
        lines.append(f"{row['name']}  ({row['dist']}: {row['target']})")
        if "error" in row:
            lines.append(f"    cannot be used: {row['error']}")
            continue
        if row.get("doc"):
            lines.append(f"    {row['doc']}")
        schema = row.get("options") or {}
        required = set(schema.get("required", ()))
        for name, prop in (schema.get("properties") or {}).items():
            default = "required" if name in required else f"= {json.dumps(prop.get('default'))}"
            desc = " ".join((prop.get("description") or "").split())
            lines.append(f"    options.{name}: {_type(prop)} {default}"
                         + (f"  {desc}" if desc else ""))
        if not schema:
            lines.append("    (no options)")
    return lines


def rewards(as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON list: name, dist, target, doc, options (JSON schema)")] = False,
            ) -> None:
    """List the reward functions installed here (built-ins and plugins), with their options."""
    from services.rewards.registry import describe

    rows = describe()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for line in render(rows):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command()(rewards)
