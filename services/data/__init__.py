"""Problems, loaders, prompt rendering and the resumable prompt sampler."""

from .loaders import (
    DataFormatError,
    load_fields,
    load_gsm8k_jsonl,
    load_hf,
    load_math,
    load_problems,
)
from .problems import Problem
from .prompts import DEFAULT_INSTRUCTION, render_prompt, user_message
from .sampler import PromptSampler
from .skills import SKILLS, distinct_skill_problems, skill_problems
from .synthetic import arithmetic_problems

__all__ = [
    "DEFAULT_INSTRUCTION",
    "DataFormatError",
    "Problem",
    "PromptSampler",
    "SKILLS",
    "arithmetic_problems",
    "distinct_skill_problems",
    "load_fields",
    "load_gsm8k_jsonl",
    "load_hf",
    "load_math",
    "load_problems",
    "render_prompt",
    "skill_problems",
    "user_message",
]
