"""The base of every config section (kept apart so that section modules can share it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every section: typos in a config are errors, not silently ignored keys."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
