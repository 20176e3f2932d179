"""Data layer: loaders on the shared public files, synthetic task, prompts, resumable sampler."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pydantic
import pytest

from services.data import (
    DEFAULT_INSTRUCTION,
    DataFormatError,
    Problem,
    PromptSampler,
    arithmetic_problems,
    load_gsm8k_jsonl,
    load_math,
    load_problems,
    render_prompt,
)
from services.data.problems import _normalize_answer

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared test data folder {SHARED} is absent"
)
INTEGER = re.compile(r"-?\d+")


# --- answers and the Problem record --------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("1,234", "1234"),
        ("1,450,000", "1450000"),
        (27.0, "27"),
        ("27.0", "27"),
        (0.5, "0.5"),
        (12, "12"),
        ("025", "25"),
        ("-0.0", "0"),
        ("$5$", "5"),
        ("\\$42409", "42409"),
        (" 18 ", "18"),
        ("1,2", "1,2"),  # a list of answers, not a thousands separator
        ("(3, -1)", "(3, -1)"),
        ("\\frac{14}{3}", "\\frac{14}{3}"),
    ],
)
def test_normalize_answer(raw, expected):
    assert _normalize_answer(raw) == expected


def test_problem_is_frozen():
    p = Problem(id="a", question="q", answer="1")
    with pytest.raises(pydantic.ValidationError):
        p.answer = "2"


# --- loaders on the shared public files ----------------------------------------------------


@needs_shared
def test_gsm8k_test_file():
    problems = load_gsm8k_jsonl(SHARED / "gsm8k" / "test.jsonl")
    assert len(problems) == 1319
    assert problems[0].answer == "18"  # "... #### 18"
    assert problems[0].question.startswith("Janet")
    # 14 raw answers carry thousands separators ("#### 1,875"); none survive normalisation.
    assert all(INTEGER.fullmatch(p.answer) for p in problems)
    assert len({p.id for p in problems}) == 1319
    assert (
        load_problems("gsm8k", path=str(SHARED / "gsm8k" / "test.jsonl"), limit=7) == problems[:7]
    )


@needs_shared
def test_math500_jsonl():
    problems = load_math(SHARED / "math500" / "test.jsonl")
    assert len(problems) == 500
    first = problems[0]
    assert first.id == "test/precalculus/807.json"
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"  # LaTeX kept verbatim
    assert first.question.startswith("Convert the point $(0,3)$")


@needs_shared
def test_amc23_float_answers():
    problems = load_problems("math", path=str(SHARED / "amc23" / "test.jsonl"))
    assert len(problems) == 40
    assert problems[0].answer == "27"  # JSON 27.0
    assert all(INTEGER.fullmatch(p.answer) for p in problems)


@needs_shared
def test_math_train_json_array(caplog):
    problems = load_math(SHARED / "math_train" / "math.json")
    # 7474 rows, of which 2 have a null and 2 an empty answer: skipped with a warning.
    assert len(problems) == 7470
    assert "skipped 4 rows" in caplog.text
    assert (problems[0].id, problems[0].answer) == ("math-0", "0")
    assert problems[5].answer == "(3, -1)"
    assert len(load_math(SHARED / "math_train" / "math.json", limit=3)) == 3


# --- loader errors on hand-written files ---------------------------------------------------


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_gsm8k_bad_lines_are_named(tmp_path):
    good = json.dumps({"question": "Two plus two?", "answer": "2+2=4\n#### 1,234"})
    path = _write(tmp_path / "g.jsonl", [good, "", '{"question": "broken", '])
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:3: invalid JSON")):
        load_gsm8k_jsonl(path)
    assert load_gsm8k_jsonl(path, limit=1)[0].answer == "1234"  # stops before the bad line
    no_marker = json.dumps({"question": "q", "answer": "just 4"})
    path = _write(tmp_path / "h.jsonl", [good, no_marker])
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:2: answer has no '####")):
        load_gsm8k_jsonl(path)
    path = _write(tmp_path / "i.jsonl", [json.dumps({"problem": "q", "answer": "1"})])
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:1: missing field 'question'")):
        load_gsm8k_jsonl(path)


def test_math_loader_formats_and_errors(tmp_path):
    rows = [
        {"question": "What is 1/2 as a decimal?", "answer": 0.5},
        {"problem": "x?", "answer": 2},
    ]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    assert [(p.id, p.answer) for p in load_math(path)] == [("math-0", "0.5"), ("math-1", "2")]
    path.write_text(json.dumps([rows[0], {"problem": "no answer"}]), encoding="utf-8")
    with pytest.raises(DataFormatError, match="array item 1: missing field 'answer'"):
        load_math(path)
    path = _write(tmp_path / "m.jsonl", [json.dumps(rows[0]), "[1, 2]"])
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:2: expected a JSON object")):
        load_math(path)
    path = _write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(DataFormatError, match="no problems"):
        load_math(path)


def test_load_problems_dispatch_errors():
    with pytest.raises(ValueError, match="unknown data source"):
        load_problems("csv", path="x")
    with pytest.raises(ValueError, match="needs a path"):
        load_problems("gsm8k", path=None)
    with pytest.raises(ValueError, match="limit"):
        load_problems("arith", limit=0)


def test_hf_without_datasets_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(RuntimeError, match="`datasets` package"):
        load_problems("hf", path="openai/gsm8k:main")


def test_hf_loader_with_a_fake_datasets_module(monkeypatch):
    calls = []

    def load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return [
            {"q": "Two plus two?", "a": "2 + 2 = 4\n#### 1,004"},
            {"q": "Skip me", "a": None},
            {"q": "Half?", "a": 0.5},
        ]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    got = load_problems(
        "hf", path="openai/gsm8k:main", split="test", question_field="q", answer_field="a"
    )
    assert calls == [("openai/gsm8k", "main", "test")]
    assert [(p.id, p.answer) for p in got] == [
        ("openai/gsm8k-test-0", "1004"),
        ("openai/gsm8k-test-2", "0.5"),
    ]


# --- synthetic arithmetic ------------------------------------------------------------------


def test_arithmetic_is_deterministic_and_correct():
    ops = ("+", "-", "*", "/")
    a = arithmetic_problems(300, seed=7, min_operand=-12, max_operand=30, operators=ops)
    assert a == arithmetic_problems(300, seed=7, min_operand=-12, max_operand=30, operators=ops)
    assert a != arithmetic_problems(300, seed=8, min_operand=-12, max_operand=30, operators=ops)
    assert len({p.id for p in a}) == 300 and a[4].id == "arith-7-4"
    seen_ops = set()
    for p in a:
        m = re.fullmatch(r"What is (\(?-?\d+\)?) ([-+*/]) (\(?-?\d+\)?)\?", p.question)
        assert m, p.question
        seen_ops.add(m.group(2))
        value = eval(f"{m.group(1)} {m.group(2)} {m.group(3)}")  # trusted: built by the test
        for operand in (m.group(1), m.group(3)):
            assert -12 <= int(operand.strip("()")) <= 30
        assert value == int(value) and str(int(value)) == p.answer  # "/" only when exact
    assert seen_ops == set(ops)
    # The default task: one-digit additions.
    small = arithmetic_problems(50, seed=0)
    assert all(re.fullmatch(r"What is \d \+ \d\?", p.question) for p in small)
    assert load_problems("arith", seed=0, arith={"n": 50}, limit=10) == small[:10]


def test_arithmetic_rejects_bad_settings():
    with pytest.raises(ValueError):
        arithmetic_problems(3, seed=0, operators=("^",))
    with pytest.raises(ValueError):
        arithmetic_problems(3, seed=0, min_operand=5, max_operand=1)
    with pytest.raises(ValueError):
        arithmetic_problems(3, seed=0, min_operand=0, max_operand=0, operators=("/",))


# --- sampler -------------------------------------------------------------------------------


def test_sampler_epochs_are_shuffled_permutations():
    s = PromptSampler(10, seed=3)
    e0, e1 = s.next_batch(10), s.next_batch(10)
    assert sorted(e0) == sorted(e1) == list(range(10))
    assert e0 != e1  # reshuffled per epoch (seed + epoch)
    assert s.state_dict() == {"epoch": 2, "cursor": 0, "seed": 3}
    assert PromptSampler(10, seed=3).next_batch(20) == e0 + e1
    assert PromptSampler(10, seed=4).next_batch(10) != e0


def test_sampler_crosses_epoch_boundary():
    s = PromptSampler(5, seed=0)
    p0, p1 = s.permutation(0), s.permutation(1)
    assert s.next_batch(3) == p0[:3]
    assert s.next_batch(3) == p0[3:] + p1[:1]
    assert s.state_dict() == {"epoch": 1, "cursor": 1, "seed": 0}
    assert s.next_batch(0) == []
    assert s.next_batch(12) == p1[1:] + s.permutation(2) + s.permutation(3)[:3]


def test_sampler_resume_is_exact():
    original = PromptSampler(7, seed=11)
    for k in (3, 5, 2):
        original.next_batch(k)
    state = json.loads(json.dumps(original.state_dict()))  # must survive a JSON checkpoint
    expected = [original.next_batch(k) for k in (4, 9, 1, 6)]
    restored = PromptSampler(7, seed=0)  # the seed comes from the state
    restored.load_state_dict(state)
    assert [restored.next_batch(k) for k in (4, 9, 1, 6)] == expected
    # A state saved exactly at an epoch end is equivalent to the start of the next epoch.
    at_end = PromptSampler(7, seed=11)
    at_end.load_state_dict({"epoch": 0, "cursor": 7, "seed": 11})
    assert at_end.next_batch(7) == PromptSampler(7, seed=11).permutation(1)
    with pytest.raises(ValueError):
        at_end.load_state_dict({"epoch": 0, "cursor": 8, "seed": 11})


# --- prompts -------------------------------------------------------------------------------

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import models, pre_tokenizers, processors, trainers

    specials = ["<unk>", "<s>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # word-level splits: context-free tokens
    corpus = ["What is 3 + 5?", DEFAULT_INSTRUCTION, "You are a careful solver.", "abcdefghij"]
    tok.train_from_iterator(
        corpus * 10, trainers.BpeTrainer(vocab_size=200, special_tokens=specials)
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", chat_template=TEMPLATE
    )


def _contains(seq: list[int], sub: list[int]) -> bool:
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_render_prompt_with_chat_template(tiny_tokenizer):
    question = "What is 3 + 5?"
    ids = render_prompt(tiny_tokenizer, question, system="You are a careful solver.")
    assert type(ids) is list and ids and all(type(t) is int for t in ids)
    assert _contains(ids, tiny_tokenizer.encode(question, add_special_tokens=False))
    assert _contains(ids, tiny_tokenizer.encode(DEFAULT_INSTRUCTION, add_special_tokens=False))
    special = tiny_tokenizer.convert_tokens_to_ids(["<|system|>", "<|user|>", "<|assistant|>"])
    assert ids[0] == special[0] and special[1] in ids and ids[-1] == special[2]
    bare = render_prompt(tiny_tokenizer, question, instruction="")
    assert bare[0] == special[1] and not _contains(
        bare, tiny_tokenizer.encode("Please", add_special_tokens=False)
    )


def test_render_prompt_without_chat_template(tiny_tokenizer):
    tok = tiny_tokenizer
    saved, tok.chat_template = tok.chat_template, None
    try:
        ids = render_prompt(tok, "What is 3 + 5?")
    finally:
        tok.chat_template = saved
    assert type(ids) is list and all(type(t) is int for t in ids)
    assert ids[0] == tok.bos_token_id  # special tokens added in the plain-text fallback
    words = tok.encode("What is 3 + 5? " + DEFAULT_INSTRUCTION, add_special_tokens=False)
    assert ids[1:] == words  # whitespace pre-tokenizer: "\n" separates like a space


def test_default_instruction_matches_config():
    config = pytest.importorskip("services.config")
    assert config.DEFAULT_INSTRUCTION == DEFAULT_INSTRUCTION
