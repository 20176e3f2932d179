"""Evaluation protocols (`paper`, `qwen`, `mathrl`): prompts rendered byte for byte as the
published code builds them, and answers read as its parsers read them. No model, no server.

The `paper` fixture below was produced once by running the paper's own `eval_gsm8k.py`
prompt code (`random.seed(42)`, `random.sample(list(gsm8k_train), 8)`, its
`build_few_shot_prompt` and per-question f-string, cut out of the file and executed) on
../shared/data/gsm8k; the test recomputes it with our implementation and with a second,
independent one written here.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from conftest import ROOT

from services.evals.paper import (
    paper_correct,
    paper_eval_prefix,
    paper_eval_prompt,
    paper_extract_number,
)
from services.evals.protocols import fewshot_source, get_protocol, gsm8k_train_pairs
from services.evals.qwen import qwen_extract, qwen_prompt

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"
needs_data = pytest.mark.skipif(not (GSM8K / "train.jsonl").is_file(),
                                reason="../shared/data/gsm8k is not here")

# From the paper's code, seed 42 (see the module docstring).
PAPER_TRAIN_INDICES = [5238, 912, 204, 6074, 2253, 2006, 1828, 1143]
PAPER_PREFIX_SHA256 = "e1d67d49b6ab0332dbca04e8721f7e91420bf215a27947ee81b6dc9418ea2a92"
PAPER_PREFIX_CHARS = 4656
PAPER_PROMPT_SHA256 = {
    0: "4363906f2bf338adedeac803ad344460a43cd4fee60000b1e3670784609aaa64",
    1: "93899f0a5149777cf5a4be32f0bb1089c6ada88a42a2469e74b8c01a570d2643",
    2: "592c1cff3b2e6b675f52c69e293ef18adf155fcb75e8ce102d0e841bc1cc3b01",
    1318: "e627a41133a13aba5b9d77bff8e97d81294fa69fbc11681900d54f6c0eec7fff",
}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _independent_prefix(rows: list[dict]) -> str:
    """A second reimplementation, straight from the paper's description of its format."""
    rng = random.Random(42)
    out = []
    for r in rng.sample(rows, 8):
        reasoning, _, final = r["answer"].partition("####")
        out.append(f"Question: {r['question']}\nSolution: Let's think step by step. "
                   f"{reasoning.strip()}\n#### The final answer is {final.strip()}\n\n")
    return "".join(out)


@needs_data
def test_paper_prompt_matches_the_papers_code_byte_for_byte():
    pairs = gsm8k_train_pairs(GSM8K / "train.jsonl")
    rows = _rows(GSM8K / "train.jsonl")
    test = _rows(GSM8K / "test.jsonl")
    prefix = paper_eval_prefix(pairs)
    assert len(prefix) == PAPER_PREFIX_CHARS and _sha(prefix) == PAPER_PREFIX_SHA256
    assert prefix == _independent_prefix(rows)
    # The 8 shots are those train rows, in the order drawn.
    assert prefix.startswith(f"Question: {rows[PAPER_TRAIN_INDICES[0]]['question']}\n")
    for i in PAPER_TRAIN_INDICES:
        assert f"Question: {rows[i]['question']}\n" in prefix
    proto = get_protocol("paper", train_pairs=pairs)
    for i, want in PAPER_PROMPT_SHA256.items():
        text = proto.text(test[i]["question"])
        assert _sha(text) == want, f"test problem {i}"
        assert text == paper_eval_prompt(prefix, test[i]["question"])
        assert text.endswith(f"Question: {test[i]['question']}\nSolution: Let's think step by "
                             "step. ")
    assert proto.max_tokens == 512 and proto.stop is None  # greedy 512 tokens, no stop string


def test_paper_prefix_depends_on_seed_and_order():
    pairs = [(f"q{i}", f"r{i}\n#### {i}") for i in range(50)]
    a = paper_eval_prefix(pairs)
    assert a != paper_eval_prefix(pairs, seed=41)
    assert a != paper_eval_prefix(list(reversed(pairs)))
    assert a.count("#### The final answer is ") == 8


def test_paper_answer_reading():
    # 1. the first "#### The final answer is N", even when the model goes on with more.
    text = ("5 + 3 = 8\n#### The final answer is 8\n\nQuestion: x\nSolution: 9\n"
            "#### The final answer is 9")
    assert paper_extract_number(text) == 8.0
    # 2. "final answer: N"; its "answer is" branch wants the digits right after "is" (no
    # space: `answer is(\d+...)`), so "the answer is 12" falls through to 3., the last number.
    assert paper_extract_number("So the answer is 12 apples, not 13") == 13.0
    assert paper_extract_number("So the answer is12 apples, not 13") == 12.0
    assert paper_extract_number("Final answer: 7.5 and 2") == 7.5
    assert paper_extract_number("I got 3, then 4, then -2") == -2.0
    assert paper_extract_number("no digits") is None
    assert paper_correct("#### The final answer is 18", "18") == ("18", True)
    assert paper_correct("it is 18.05", "18") == ("18.05", True)  # within 0.1
    assert paper_correct("it is 18.2", "18") == ("18.2", False)
    assert paper_correct("blank", "18") == (None, False)


def test_qwen_prompt_is_the_qwen25_math_cot_template():
    assert qwen_prompt("What is 1+1?") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n"
        "<|im_start|>assistant\n")
    proto = get_protocol("qwen")
    assert proto.max_tokens >= 2048 and "<|im_end|>" in proto.stop


@pytest.mark.parametrize(("text", "want"), [
    (r"so \boxed{\frac{1}{2}} and \boxed{3}", "3"),                 # the last box
    (r"\boxed{(2,12) \cup (12,102)}.", r"(2,12) \cup (12,102)"),     # braces, commas kept
    ("The final answer is $5$. I hope it is correct.", "5"),         # Minerva form
    ("Thus the answer is 42.", "42"),                                 # "he answer is", "." off
    ("the final answer is: 7", "7"),
    ("I get 1,234 and then 5,678 total", "5678"),                     # last number, no commas
    ("nothing here", None),
])
def test_qwen_answer_reading(text, want):
    assert qwen_extract(text) == want


def test_mathrl_protocol_is_the_project_default():
    proto = get_protocol("mathrl")
    assert proto.text is None and proto.max_tokens is None and proto.stop is None
    assert get_protocol("mathrl", style="few-shot").stop  # the 8-shot text stops at "Q:"
    with pytest.raises(ValueError, match="paper"):
        get_protocol("paper")  # needs the train split
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("lm-eval")


def test_fewshot_source(tmp_path):
    test = tmp_path / "test.jsonl"
    test.write_text("")
    assert fewshot_source(str(test), None) is None           # no train.jsonl beside it: HF
    (tmp_path / "train.jsonl").write_text("")
    assert fewshot_source(str(test), None) == str(tmp_path / "train.jsonl")
    assert fewshot_source(str(test), "/x/train.jsonl") == "/x/train.jsonl"
    assert fewshot_source(None, None) is None


def test_protocol_grading_reads_answers_its_own_way():
    from services.rewards import GraderPool

    texts = ["blah 17 and then 18", r"\boxed{18}", "#### The final answer is 18\n#### 3"]
    with GraderPool(n_workers=1) as pool:
        paper = get_protocol("paper", train_pairs=[("q", "a\n#### 1")] * 8)
        assert paper.grade(pool, texts, ["18"] * 3) == (["18", "18", "18"], [True, True, True])
        answers, ok = get_protocol("qwen").grade(pool, texts, ["18"] * 3)
        assert answers[:2] == ["18", "18"] and ok[:2] == [True, True]
        # The project's grader reads the LAST `####` line: 3, wrong; the paper's reads 18.
        answers, ok = get_protocol("mathrl").grade(pool, texts, ["18"] * 3)
        assert answers == [None, "18", "3"] and ok == [False, True, False]


def test_api_refuses_benchmark_files_outside_the_data_folders(tmp_path):
    """`eval.benchmarks[i].path` / `.fewshot_path` are files the service opens: same rule as
    `data.path` (a regular file inside a data folder)."""
    from orchestrator.service.api.limits import ApiPolicy
    from services.config import RunConfig

    inside = tmp_path / "train.jsonl"
    inside.write_text("{}\n")
    policy = ApiPolicy(data_roots=(tmp_path,))

    def cfg(**bench):
        return RunConfig.model_validate({"eval": {"benchmarks": [{"name": "gsm8k", **bench}]}})

    assert policy.run_problem(cfg(protocol="paper", fewshot_path=str(inside))) is None
    field, _ = policy.run_problem(cfg(protocol="paper", fewshot_path="/etc/passwd"))
    assert field == "eval.benchmarks.0.fewshot_path"
    field, _ = policy.run_problem(cfg(path="/dev/zero"))
    assert field == "eval.benchmarks.0.path"


def test_run_evaluation_uses_the_benchmarks_protocol(tmp_path):
    """`[[eval.benchmarks]] protocol = "paper"`: the run's evaluator renders the paper's
    prompts (shots from `train.jsonl` beside the test file), 512 tokens, no stop; a
    max_model_len too small for them is refused up front, naming it."""
    from orchestrator.run.evaluate import Evaluator
    from services.config import RunConfig
    from services.tinymodel import build_tokenizer

    rows = [{"question": f"Q{i}: what is {i} + 1?", "answer": f"It is <<{i}+1>>.\n#### {i + 1}"}
            for i in range(12)]
    for name in ("train.jsonl", "test.jsonl"):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = {"name": "gsm8k", "path": str(tmp_path / "test.jsonl"), "protocol": "paper",
             "limit": 3}

    def cfg(max_model_len: int) -> RunConfig:
        return RunConfig.model_validate({"model": {"max_model_len": max_model_len},
                                         "eval": {"enabled": True, "benchmarks": [bench]}})

    tok = build_tokenizer()
    (task,) = Evaluator(cfg(4096), tok, client=None, pool=None).tasks
    assert task.max_tokens == 512 and task.stop is None and task.protocol.name == "paper"
    prefix = paper_eval_prefix([(r["question"], r["answer"]) for r in rows])
    assert tok.decode(task.prompts[0]) == paper_eval_prompt(prefix, rows[0]["question"])
    with pytest.raises(ValueError, match="max_model_len"):
        Evaluator(cfg(600), tok, client=None, pool=None)


def test_paper_prompts_are_cut_at_2048_tokens_from_the_end():
    """The paper tokenises with `truncation=True, max_length=2048` (right side): a prompt over
    2,048 tokens loses its end, question included."""
    from services.tinymodel import build_tokenizer

    tok = build_tokenizer()
    proto = get_protocol("paper", train_pairs=[("what is 1 + 1? " * 60, "2\n#### 2")] * 8)
    ids = proto.render(tok, "What is 2 + 2?", instruction="")
    full = tok(proto.text("What is 2 + 2?"))["input_ids"]
    assert len(full) > 2048 and ids == full[:2048]
