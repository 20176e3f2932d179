"""The command line (`mathrl`): one module per verb group, the API client, the error lines.

`orchestrator.cli:main` is the console entry (pyproject's `[project.scripts]`), and
`python -m orchestrator.cli` runs the same. Imports here may reach `orchestrator.service` and
`orchestrator.run`; nothing there imports this package (tests/test_layout.py).
"""

from orchestrator.cli.commands import app, main

__all__ = ["app", "main"]
