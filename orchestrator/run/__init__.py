"""One training run: the processes it needs (`stack`, `runtime`), the GRPO loop (`loop`,
`rollout`, `groups`), evaluation, fault recovery, and where its metrics and logs go.

Used by the service's scheduler and by `mathrl train` alike, so it imports neither
`orchestrator.service` nor `orchestrator.cli` (tests/test_layout.py).
"""
