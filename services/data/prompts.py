"""Turn a question into prompt token ids, exactly once, with the model's own chat template.

The generator receives these ids (never text), so the learner and the sampler see the very
same tokens; re-tokenising text on either side could split differently and corrupt ratios.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def user_message(question: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The user turn: the question, then the instruction on its own line (if any)."""
    return f"{question}\n{instruction}" if instruction else question


def _as_id_list(out: Any) -> list[int]:
    """``apply_chat_template`` returns a list in transformers 4 but a BatchEncoding (a dict
    with ``input_ids``) by default in transformers 5; either may be batched one level."""
    if isinstance(out, Mapping) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    if hasattr(out, "tolist"):  # a tensor / array, should a caller's tokenizer return one
        out = out.tolist()
    out = list(out)
    if out and isinstance(out[0], list | tuple):
        if len(out) != 1:
            raise ValueError(f"expected one tokenized prompt, got a batch of {len(out)}")
        out = list(out[0])
    return [int(t) for t in out]


def default_system_text(tokenizer) -> str:
    """What the chat template writes around an empty user turn when no system message is
    given: Qwen2.5-Math's template puts "Please reason step by step, and put your final
    answer within \\boxed{}." there on its own."""
    out = tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                        add_generation_prompt=True)
    return out if isinstance(out, str) else ""


def render_prompt(
    tokenizer: Any,
    question: str,
    *,
    instruction: str = DEFAULT_INSTRUCTION,
    system: str | None = None,
) -> list[int]:
    """Prompt token ids for ``question``, ending where the assistant's answer starts.

    With a chat template: ``[system?, user(question + "\\n" + instruction)]`` rendered with
    ``add_generation_prompt=True``; the bare question when there is no `system` and the
    template's own default system message already holds `instruction`. Without one (base
    models): plain text ``[system + "\\n"] + question + "\\n" + instruction + "\\n"``,
    encoded with the tokenizer's special tokens (e.g. BOS).
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}] if system else []
        if instruction and not system and instruction in default_system_text(tokenizer):
            instruction = ""  # the template says it already (Qwen2.5-Math): say it once
        messages.append({"role": "user", "content": user_message(question, instruction)})
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return _as_id_list(out)
    text = question + "\n" + (instruction + "\n" if instruction else "")
    if system:
        text = system + "\n" + text
    return _as_id_list(tokenizer(text, add_special_tokens=True)["input_ids"])
