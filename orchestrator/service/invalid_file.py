"""`InvalidFile`, alone in a module of its own so that the client-only install (no
pydantic-settings) can name it: the CLI's error lines catch it for every verb."""


class InvalidFile(ValueError):
    """A local file (config, data) that cannot be used; the message says which and why.
    Raised by `mathrl up` for its `--config` as by the CLI's verbs; `orchestrator.cli.errors`
    turns it into a plain line and exit code 2."""
