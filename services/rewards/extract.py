"""Answer extraction and gold normalisation.

Everything here runs in the *parent* process (the learner / orchestrator), once per
completion, so it must be cheap and must never hang on adversarial model output:

* every function is linear in the length of its input (completions can be ~100 KB of
  degenerate text from a policy that has collapsed);
* we search from the end with ``str.rfind`` where the answer is expected to be, so the
  common case ("... so the answer is \\boxed{42}.") only looks at the tail of the text;
* the only regular expressions used are simple and anchored (no nested quantifiers), so
  they cannot backtrack catastrophically.

The actual mathematical comparison is *not* done here: that is math-verify's job and it
runs in a worker process (see ``pool.py``), because sympy can be slow or hang.
"""

from __future__ import annotations

import math
import re
from typing import Literal

__all__ = ["GRADINGS", "Grading", "extract_answer", "extract_last_number", "has_boxed",
           "normalize_gold", "strip_thousands", "unevaluated"]

# How an answer is read from a completion (see ``extract_answer``). ``strict`` counts only
# anchored answers, so a gain under it can be format as much as skill; ``lenient`` also reads
# an unanchored last number, so a gain under it is skill.
Grading = Literal["strict", "lenient"]
GRADINGS: tuple[str, ...] = ("strict", "lenient")

# LaTeX commands whose argument is taken as the final answer.
_BOX_COMMANDS = ("\\boxed", "\\fbox")

# One "brace token": either an escape (``\{``, ``\}``, ``\\`` ... consumed as a unit so
# that literal braces such as ``\boxed{\{1,2\}}`` do not disturb the matching) or a real
# brace. Linear: a single character class / fixed-width alternative.
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)

# ``\boxed 5`` form: TeX takes one token; models mean "the next word". Capped length keeps
# the cost per candidate bounded even on one giant line.
_BARE_TOKEN = re.compile(r"[^\s${}]{1,200}")

# GSM8K-style final line ``#### 1,234``. ``^`` in MULTILINE mode only matches at line
# starts, so this is a linear scan.
_HASH_LINE = re.compile(r"^[ \t]*####(?!#)[ \t]*([^\n]*)", re.MULTILINE)

# "The answer is X" / "Final answer: X". ``\b`` before ``answer`` rejects "reanswer";
# nothing here can backtrack more than a few characters.
_ANSWER_PHRASE = re.compile(r"\banswer(?:\s*:|\s+is\b\s*:?)[ \t]*", re.IGNORECASE)

# End of a sentence: a period followed by whitespace or end of string. "3.5" is not a
# sentence end, "3.5." is (at the second period).
_SENTENCE_END = re.compile(r"\.(?=\s|$)")

# A number written with thousands separators ("1,234", "-1,234,567.5"). Commas go only when
# the WHOLE answer is such a number: inside "(2,12) \\cup (12,102)" or "\\{1,234\\}" they
# separate elements, and removing them there changed the answer.
_GROUPED_NUMBER = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")

# "#### The final answer is 72" (the paper's released format): the phrase before the value.
_HASH_PHRASE = re.compile(r"(?:the\s+)?(?:final\s+)?answer(?:\s*:|\s+is\b\s*:?)[ \t]*",
                          re.IGNORECASE)

# A plain number for the lenient reading: optional sign (not when it is a binary minus
# glued to a digit or letter, "5-3" reads 3), thousands groups, decimals, one "/" fraction.
# No nested quantifiers, so finditer over the whole text stays linear.
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3}(?!\d))*(?:\.\d+)?(?:/\d+)?|(?<=\w)\d+(?:\.\d+)?")

# "27.0", "-3.000" -> integer. Keeps e.g. "27.5" untouched (math-verify compares those).
_INTEGRAL_FLOAT = re.compile(r"^([+-]?\d+)\.0*$")

# How much of a line after "the answer is" we look at; bounds per-candidate work.
_PHRASE_MAX_CHARS = 500


def _match_brace_forward(text: str, open_idx: int) -> int | None:
    """Index of the ``}`` matching the ``{`` at ``open_idx``, scanning only forward.

    Cost is proportional to ``len(text) - open_idx``; for the last box of a completion
    that is just the tail of the text.
    """
    depth = 1
    for m in _BRACE_TOKEN.finditer(text, open_idx + 1):
        tok = m.group()
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return None


def _brace_pairs(text: str) -> dict[int, int]:
    """Map every balanced ``{`` index to its ``}`` index, in one linear pass.

    Only built when the last box is unbalanced; then we have to look at earlier boxes,
    and re-scanning forward from each of them would be quadratic (think of
    ``"\\boxed{" * 5000``). Stray ``}`` at depth 0 are ignored, unmatched ``{`` simply
    never get an entry.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_TOKEN.finditer(text):
        tok = m.group()
        if tok == "{":
            stack.append(m.start())
        elif tok == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _box_candidates(text: str):
    """Yield ``(position, command)`` for each box command, from the last to the first.

    Each command keeps its own search cursor, so the total ``rfind`` work is linear no
    matter how many candidates we end up rejecting.
    """
    cursors = {cmd: text.rfind(cmd) for cmd in _BOX_COMMANDS}
    while True:
        cmd = max(cursors, key=cursors.__getitem__)
        pos = cursors[cmd]
        if pos < 0:
            return
        yield pos, cmd
        cursors[cmd] = text.rfind(cmd, 0, pos)


def _last_box(text: str) -> str | None:
    """Content of the last complete, non-empty box, or ``None``."""
    pairs: dict[int, int] | None = None  # built lazily, see _brace_pairs
    scanned_forward = False
    n = len(text)
    for pos, cmd in _box_candidates(text):
        i = pos + len(cmd)
        if i < n and text[i].isalpha():  # e.g. \boxedfoo or \fboxsep: another macro
            continue
        j = i
        while j < n and text[j].isspace():
            j += 1
        if j < n and text[j] == "{":
            if not scanned_forward:
                # Common case: the last box is complete; only the tail gets scanned.
                scanned_forward = True
                close = _match_brace_forward(text, j)
            else:
                if pairs is None:
                    pairs = _brace_pairs(text)
                close = pairs.get(j)
            if close is None:  # unbalanced: fall back to an earlier box
                continue
            content = text[j + 1 : close].strip()
        else:
            # "\boxed 5" / "\boxed5" / "\boxed\frac12": one bare token.
            m = _BARE_TOKEN.match(text, j)
            if m is None:
                continue
            content = m.group().rstrip(".,;")
        if content:  # "\boxed{}" is not an answer; try the previous box
            return content
    return None


def has_boxed(text: str) -> bool:
    """True if ``text`` contains a complete (balanced, non-empty) ``\\boxed``/``\\fbox``."""
    return _last_box(text) is not None


def strip_thousands(s: str) -> str:
    """``"1,234"`` -> ``"1234"`` when ``s`` is one number and nothing else; otherwise ``s``
    unchanged (tuples, intervals and sets keep their commas)."""
    return s.replace(",", "") if _GROUPED_NUMBER.fullmatch(s) else s


def _clean_phrase_answer(raw: str) -> str:
    """Cut "the answer is X. More text" down to X and strip typographic wrapping."""
    m = _SENTENCE_END.search(raw)
    if m is not None:
        raw = raw[: m.start()]
    s = raw.strip().strip("*").strip()  # markdown bold: "**42**"
    for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)]
    s = s.strip().strip("$").strip().rstrip(".").strip()
    return strip_thousands(s)


def extract_last_number(text: str) -> str | None:
    """The last number written anywhere in ``text`` (thousands separators removed), or None.

    ``"3 + 5 = 8"`` -> ``"8"``, ``"x = -2.5."`` -> ``"-2.5"``, ``"5-3"`` -> ``"3"``.
    """
    last = None
    for last in _NUMBER.finditer(text or ""):  # noqa: B007 - we want the last match
        pass
    return None if last is None else strip_thousands(last.group())


def extract_answer(text: str, grading: Grading = "strict") -> str | None:
    """Extract the final answer from a model completion.

    ``grading="lenient"``: the strict answer below when there is one, else the last number
    in the text whatever the format (`extract_last_number`), so lenient >= strict always.

    Priority (the first rule that yields something wins):

    1. the content of the LAST complete ``\\boxed{...}`` / ``\\fbox{...}`` (balanced
       braces, nesting allowed) or ``\\boxed 5`` (single bare token); if the last box is
       unbalanced or empty, the previous complete one;
    2. the last GSM8K line ``#### N`` or ``#### The final answer is N`` (thousands
       separators removed when N is a single number);
    3. the last "the answer is X" / "answer: X" (case-insensitive; X runs to the end of
       the sentence or line; ``$``, ``**`` and a trailing period are stripped);
    4. ``None``.

    Linear time in ``len(text)``; for the usual "...\\boxed{42}" only the tail is scanned.
    """
    if grading not in GRADINGS:
        raise ValueError(f"grading must be one of {GRADINGS}, got {grading!r}")
    strict = _extract_anchored(text)
    if strict is None and grading == "lenient":
        return extract_last_number(text)
    return strict


def _extract_anchored(text: str) -> str | None:
    if not text:
        return None
    boxed = _last_box(text)
    if boxed is not None:
        return boxed

    if "####" in text:
        last = None
        for last in _HASH_LINE.finditer(text):  # noqa: B007 - we want the last match
            pass
        if last is not None:
            line = last.group(1)
            phrase = _HASH_PHRASE.match(line)
            # "#### The final answer is 72." reads like a sentence; "#### 3.5" is a value.
            value = _clean_phrase_answer(line[phrase.end():]) if phrase else \
                strip_thousands(line.strip().strip("$").strip().rstrip(".").strip())
            if value:
                return value

    for m in reversed(list(_ANSWER_PHRASE.finditer(text))):
        tail = text[m.end() : m.end() + _PHRASE_MAX_CHARS].split("\n", 1)[0]
        value = _clean_phrase_answer(tail)
        if value:
            return value
    return None


def normalize_gold(gold: str | int | float) -> str:
    """Turn a dataset gold answer into a string math-verify can parse.

    * GSM8K worked solutions: everything before the last ``####`` is dropped;
    * ``$`` signs are removed, whitespace stripped, and thousands separators too when the
      whole answer is one number (``1,234``; ``(2,12) \\cup (12,102)`` keeps its commas);
    * integral floats become integers (``27.0`` / ``"27.0"`` -> ``"27"``) so that the
      string fast path in math-verify and humans reading logs see the same thing;
    * LaTeX (``\\frac34``, ``\\frac{1}{2}``, ``\\sqrt{2}``) is left alone: math-verify
      parses it.
    """
    if isinstance(gold, bool):  # bool is an int subclass; True is not a gold answer
        raise TypeError("gold must be str, int or float, not bool")
    if isinstance(gold, int):
        return str(gold)
    if isinstance(gold, float):
        if math.isfinite(gold) and gold.is_integer():
            return str(int(gold))
        return repr(gold)
    if not isinstance(gold, str):
        raise TypeError(f"gold must be str, int or float, not {type(gold).__name__}")
    s = gold
    if "####" in s:
        s = s.rsplit("####", 1)[1]
    s = s.replace("\\$", "").replace("$", "").strip()
    s = strip_thousands(s)
    m = _INTEGRAL_FLOAT.match(s)
    if m is not None:
        s = m.group(1)
    return s


_NUMBER_GOLD = re.compile(r"-?\d+(?:\.\d+)?")
_OPERATION = re.compile(r"\d[\s})\]]*(?:[-+*^×·÷]|\\times|\\cdot|\\div)[\s{(\[]*-?\d")


def unevaluated(answer: str | None, gold: str | int | float) -> bool:
    """The gold is a number and the answer is an expression still to compute (`27 + 82`,
    `3 \\times 4`, `2^{3}`), not a value (`109`, `-5`, `\\frac{1}{2}`, `1,234`, `1e-5`).

    math-verify evaluates what it parses, so `\\boxed{27 + 82}` "equals" 109: a policy
    trained on two-digit sums learned to copy the question into the box and was paid for it.
    Every mathrl reading (the `math` reward, evaluations, `mathrl grade`) counts such an
    answer wrong."""
    if answer is None or not _NUMBER_GOLD.fullmatch(normalize_gold(gold)):
        return False
    return _OPERATION.search(answer) is not None
