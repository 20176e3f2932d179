"""The training prompt of the YouronMath paper ("Can A Gamer Train A Mathematical Reasoning
Model?", github shinandrew/YouronMath), as its `gsm8k.py` builds it with `template="qa"`,
`cot=True`, `few_shot=True`, `num_shots=2`:

    Question: <exemplar question>
    Solution: Let's think step by step. <exemplar reasoning>.
    #### The final answer is <exemplar answer>
    <blank line, then the second exemplar, then>
    Question: <question>
    Solution: Let's think step by step.<space>

No chat template. The exemplars are two of the eight chain-of-thought exemplars of Wei et al.
(2022) in the wording of the paper's `resources/examplars.py`, drawn once per run (its code
draws them with an unseeded `random.sample`; we draw with the run's seed so a run can be
repeated). TRL then keeps the LAST `max_prompt_length` (128) tokens of the prompt, which
usually cuts into the first exemplar: `left_truncate` does the same to the token ids.
"""

from __future__ import annotations

import random
import re

__all__ = ["PAPER_EXEMPLARS", "paper_example", "paper_train_prefix", "paper_train_prompt",
           "left_truncate"]

PAPER_EXEMPLARS: tuple[tuple[str, str, str], ...] = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
     "After they are done, there will be 21 trees. How many trees did the grove workers plant "
     "today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. "
     "So there must have been 21 - 15 = 6. So the answer is 6.", "6"),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the "
     "parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5.", "5"),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they "
     "have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = "
     "74. After eating 35, they had 74 - 35 = 39.", "39"),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How "
     "many lollipops did Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave "
     "Denny 20 - 12 = 8.", "8"),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many "
     "toys does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 "
     "more toys. 5 + 4 = 9.", "9"),
    ("There were nine computers in the server room. Five more computers were installed each "
     "day, from monday to thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So "
     "5 * 4 = 20 computers were added. 9 + 20 is 29.", "29"),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 "
     "more. How many golf balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. "
     "After losing 2 more, he had 35 - 2 = 33 golf balls.", "33"),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she "
     "has 23 - 15 dollars left. 23 - 15 is 8.", "8"),
)
"""(question, reasoning, answer) of the eight exemplars, as the paper's code has them."""

_CALCULATOR = re.compile(r"<<.*?>>")


def paper_example(question: str, solution: str | None, answer: str | None) -> str:
    """One "Question/Solution" block. Reproduces the paper's `format_example` quirks on purpose:
    line breaks of the reasoning become ". ", calculator notes `<<...>>` go, a period is
    added after the reasoning, and every ".." of the block (question included) becomes "."."""
    text = f"Question: {question}\nSolution: Let's think step by step. "
    if solution is not None:
        text += _CALCULATOR.sub("", ". ".join(solution.split("\n"))) + ".\n"
    text = text.replace("..", ".")
    if answer is not None:
        text += f"#### The final answer is {answer}\n\n"
    return text


def paper_train_prefix(shots: int, seed: int) -> str:
    """`shots` exemplars drawn without replacement (fixed for the run by `seed`), joined."""
    if not 0 <= shots <= len(PAPER_EXEMPLARS):
        raise ValueError(f"shots must be in 0..{len(PAPER_EXEMPLARS)}, got {shots}")
    picked = random.Random(seed).sample(PAPER_EXEMPLARS, shots)
    return "".join(paper_example(q, s, a) for q, s, a in picked)


def paper_train_prompt(prefix: str, question: str) -> str:
    """The whole prompt text: the exemplars, then the question with an open solution."""
    return prefix + paper_example(question, None, None)


def left_truncate(ids: list[int], max_tokens: int | None) -> list[int]:
    """The last `max_tokens` ids (TRL's `prompt_ids[:, -max_prompt_length:]`); all if None."""
    return list(ids) if max_tokens is None or len(ids) <= max_tokens else list(ids[-max_tokens:])
