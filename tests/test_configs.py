"""Every shipped config parses; bad configs are rejected with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.config import RunConfig, Section, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def test_there_are_configs():
    names = {p.name for p in CONFIGS}
    assert "tiny-cpu.toml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_parses(path):
    cfg = load_config(path)
    assert cfg.rollout.group_size >= 2


def test_unknown_key_rejected():
    with pytest.raises(ValidationError) as e:
        RunConfig.model_validate({"rollout": {"group_sise": 4}})
    assert "group_sise" in str(e.value)


def test_bounds_and_cross_checks():
    with pytest.raises(ValidationError, match="group_size"):
        RunConfig.model_validate({"rollout": {"group_size": 1}})
    with pytest.raises(ValidationError, match="max_lora_rank"):
        RunConfig.model_validate({"lora": {"rank": 64}, "generator": {"max_lora_rank": 16}})
    with pytest.raises(ValidationError, match="data.path"):
        RunConfig.model_validate({"data": {"source": "gsm8k"}})
    with pytest.raises(ValidationError, match="min_operand"):
        RunConfig.model_validate({"data": {"source": "arith",
                                           "arith": {"min_operand": 5, "max_operand": 1}}})


def test_every_field_is_documented():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, Section):
                walk(ann)

    walk(RunConfig)
