"""The orchestrator's layout: grouped by job, imports flowing one way.

cli -> service -> run -> services: the command line may use the service and the run, the
service may use the run, the run uses neither, and `services/` (the generator, learner and
reward code) never imports the orchestrator. Every import counts, function-level ones too, so
a lazy import cannot hide a cycle. See the package docstrings and docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("orchestrator.cli", "orchestrator.service", "orchestrator.run")
FORBIDDEN = {
    "orchestrator.run": ("orchestrator.service", "orchestrator.cli"),
    "orchestrator.service": ("orchestrator.cli",),
    "services": ("orchestrator",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved to absolute names."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *([node.module] if node.module else [])])
            # `from pkg import sub` may name a submodule: count both.
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def sources() -> list[Path]:
    return sorted([*(ROOT / "orchestrator").rglob("*.py"), *(ROOT / "services").rglob("*.py")])


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path):
    name = module_name(path)
    banned = next((b for pkg, b in FORBIDDEN.items() if within(name, pkg)), ())
    bad = sorted(i for i in imports(path) if any(within(i, b) for b in banned))
    assert not bad, f"{name} imports {bad}: imports go cli -> service -> run -> services"


def test_store_knows_nothing_of_the_api():
    """The run store returns its own records; the API maps them to its wire schemas."""
    bad = [i for i in imports(ROOT / "orchestrator" / "service" / "store.py")
           if within(i, "orchestrator")]
    assert not bad, bad


def test_every_module_sits_in_a_job_package():
    """No module drifts back into the flat `orchestrator/` folder."""
    top = sorted(p.name for p in (ROOT / "orchestrator").iterdir()
                 if p.name != "__pycache__" and not p.name.startswith("."))
    assert top == ["__init__.py", *(layer.split(".")[1] for layer in sorted(LAYERS))]
