"""The YouronMath paper's rewards (its `utils.py`), for `reward.answer_format =
"final-answer-line"`: pure string work, no math-verify.

* correctness: the first `####` of the completion, then the first run of digits/commas after
  it on that line (`####.*?([\\d,]+(?:\\.\\d+)?)`); commas dropped, compared with the gold as
  floats within 1e-3. The FIRST `####` counts: a few-shot prompt makes a base model go on
  after its answer with a new "Question: ..." of its own, whose `####` must not count.
* format: the completion holds a line `#### The final answer is N` (N digits) after a line
  break (`\\n#### The final answer is \\d+`).

Both regexes are linear: the scan after `####` stops at the line's end.
"""

from __future__ import annotations

import re

__all__ = ["final_line_answer", "final_line_correct", "final_line_format"]

_FORMAT = re.compile(r"\n#### The final answer is \d")
_NUMBER = re.compile(r"[\d,]+(?:\.\d+)?")


def final_line_answer(completion: str) -> str | None:
    """The number after the first `####` that has one on its line (commas dropped), or None."""
    start = completion.find("####")
    while start >= 0:
        end = completion.find("\n", start)
        end = len(completion) if end < 0 else end
        m = _NUMBER.search(completion, start + 4, end)
        if m is not None:
            return m.group().replace(",", "")
        # A later `####` on the same line sees a suffix of it: no number either. Next line.
        start = completion.find("####", end)
    return None


def final_line_correct(completion: str, gold: str) -> float:
    """1.0 when the first `####` number equals the gold within 1e-3, else 0.0."""
    answer = final_line_answer(completion)
    try:
        return 1.0 if answer is not None and abs(float(answer) - float(gold)) < 1e-3 else 0.0
    except ValueError:  # "#### ," or a gold that is not a number
        return 0.0


def final_line_format(completion: str) -> float:
    """1.0 when a line reads `#### The final answer is <digits>`, else 0.0."""
    return 1.0 if _FORMAT.search(completion) else 0.0
