"""Qwen2.5-Math's own evaluation (github QwenLM/Qwen2.5-Math, `evaluation/`), reimplemented:
the `qwen25-math-cot` prompt and the answer parser's order of fallbacks.

* Prompt: the literal ChatML text with the boxed instruction as the SYSTEM message and the
  bare question as the user turn (its `utils.py` template; zero-shot, no chat template of the
  model involved), tokenised as is.
* Decoding (its `sh/eval.sh`): greedy, `max_tokens_per_call` 2048, stop at `</s>`,
  `<|im_end|>`, `<|endoftext|>`.
* Answer (its `parser.extract_answer`): Minerva's "final answer is $X$. I hope", else the
  LAST `boxed` (its content up to the matching brace), else the text after the last
  "he answer is", else after the last "final answer is", else the last number (commas
  dropped); then line breaks, a leading ":" and a trailing "." or "/" go.

The equivalence check is the project's grader (math-verify), not Qwen's `math_equal` +
`strip_string`: the parser above decides WHICH answer is read, math-verify whether it is right.
"""

from __future__ import annotations

import re

__all__ = ["QWEN_MAX_TOKENS", "QWEN_STOP", "QWEN_SYSTEM", "qwen_extract", "qwen_prompt"]

QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_STOP = ("</s>", "<|im_end|>", "<|endoftext|>")
QWEN_MAX_TOKENS = 2048

_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")
_BREAKS = re.compile(r"\n\s*")


def qwen_prompt(question: str) -> str:
    """The `qwen25-math-cot` prompt text (the template strips spaces at both ends)."""
    return (f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n"
            "<|im_start|>assistant\n").strip(" ")


def _boxed_tail(text: str) -> str:
    tail = text.split("boxed")[-1]
    if not tail:
        return ""
    if tail[0] != "{":
        return tail.split("$")[0].strip()
    depth, out = 1, []
    for ch in tail[1:]:
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            break
        out.append(ch)
    return "".join(out)


def qwen_extract(text: str) -> str | None:
    """The answer Qwen2.5-Math's parser reads from a completion (None when it reads nothing)."""
    text = text.replace("\u043a\u0438", "")
    if "final answer is $" in text and "$. I hope" in text:
        pred = text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    elif "boxed" in text:
        pred = _boxed_tail(text)
    elif "he answer is" in text:
        pred = text.split("he answer is")[-1].strip()
    elif "final answer is" in text:
        pred = text.split("final answer is")[-1].strip()
    else:
        numbers = _LAST_NUMBER.findall(text.replace(",", ""))
        pred = numbers[-1] if numbers else ""
    pred = _BREAKS.sub("", pred)
    if pred.startswith(":"):
        pred = pred[1:]
    if pred.endswith(".") or pred.endswith("/"):
        pred = pred[:-1]
    return pred.strip() or None
