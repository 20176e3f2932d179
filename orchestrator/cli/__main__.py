"""`python -m orchestrator.cli`: the same as the `mathrl` console entry."""

from orchestrator.cli import main

main()
