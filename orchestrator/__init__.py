"""The orchestrator, grouped by job; imports flow one way, cli -> service -> run -> services:

- `cli/`: the `mathrl` command line (entry: `orchestrator.cli:main`).
- `service/`: `mathrl up`'s API, run store and scheduler (entry: `service/server.py`).
- `run/`: one training run: its processes, the GRPO loop, evaluation, recovery, metrics.
"""
