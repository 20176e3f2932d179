"""The paper's recipe as config: the new fields (prompt template, few-shot exemplars, left
truncation, the `final-answer-line` reward, the lr schedule, eval protocols), the shipped
`configs/paper-gsm8k-12gb.toml` against the values of the paper's code, its memory plan, and the
training prompt it renders."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.config import RunConfig, load_config
from services.data import render_prompt
from services.data.paper_prompt import (
    PAPER_EXEMPLARS,
    left_truncate,
    paper_example,
    paper_train_prefix,
    paper_train_prompt,
)
from services.learner.schedule import lr_factor

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper-gsm8k-12gb.toml"


# ------------------------------------------------------------------------ config fields


def test_new_fields_have_defaults_that_change_nothing():
    cfg = RunConfig()
    assert (cfg.data.template, cfg.data.fewshot, cfg.data.max_prompt_tokens) == ("chat", 0, None)
    assert cfg.reward.answer_format == "boxed"
    assert (cfg.learner.lr_schedule, cfg.learner.warmup_steps) == ("constant", 0)


@pytest.mark.parametrize(("section", "values", "field"), [
    ("data", {"fewshot": 9, "template": "question-solution"}, "fewshot"),
    ("data", {"max_prompt_tokens": 0}, "max_prompt_tokens"),
    ("data", {"template": "alpaca"}, "template"),
    ("reward", {"answer_format": "last-number"}, "answer_format"),
    ("learner", {"lr_schedule": "cosine"}, "lr_schedule"),
    ("learner", {"warmup_steps": -1}, "warmup_steps"),
    ("learner", {"warm_up_steps": 1}, "warm_up_steps"),  # unknown key
])
def test_new_fields_bounds_and_unknown_keys(section, values, field):
    with pytest.raises(ValidationError, match=field):
        RunConfig.model_validate({section: values})


def test_eval_protocol_field():
    bench = {"name": "gsm8k", "protocol": "paper", "fewshot_path": "data/train.jsonl"}
    cfg = RunConfig.model_validate({"eval": {"benchmarks": [bench]}})
    assert cfg.eval.benchmarks[0].protocol == "paper"
    with pytest.raises(ValidationError, match="protocol"):
        RunConfig.model_validate({"eval": {"benchmarks": [{"name": "g", "protocol": "lm"}]}})


def test_fewshot_needs_the_question_solution_template():
    with pytest.raises(ValidationError, match="question-solution"):
        RunConfig.model_validate({"data": {"fewshot": 2}})


# ------------------------------------------------------------------- the shipped profile


def test_paper_profile_holds_the_papers_values():
    """train.py / utils.py / gsm8k.py of github shinandrew/YouronMath, read by hand."""
    cfg = load_config(PAPER)
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-Math-1.5B"
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout) == (16, 32, 0.05)
    assert len(cfg.lora.target_modules) == 7
    assert (cfg.data.template, cfg.data.fewshot, cfg.data.max_prompt_tokens) == \
        ("question-solution", 2, 128)
    assert (cfg.rollout.group_size, cfg.rollout.max_new_tokens) == (2, 150)
    assert cfg.rollout.temperature == 0.9  # TRL's GRPOConfig default
    assert (cfg.reward.answer_format, cfg.reward.format_weight) == ("final-answer-line", 0.5)
    lc = cfg.learner
    assert (lc.lr, lc.max_grad_norm, lc.lr_schedule, lc.warmup_steps, lc.weight_decay) == \
        (2e-5, 0.1, "linear", 0, 0.0)
    assert cfg.algorithm.beta == 0.04
    # One epoch of the 7,473 train problems: 934 steps of 8 (HF Trainer's count).
    assert cfg.schedule.steps == (7473 * 2 + 3) // 4 // 4 == 934
    assert cfg.rollout.prompts_per_step * cfg.schedule.steps <= 7473
    (bench,) = cfg.eval.benchmarks
    assert (bench.name, bench.protocol, bench.limit) == ("gsm8k", "paper", 1319)


def test_paper_profile_fits_12gb_and_carries_its_plan():
    from orchestrator.cli.plan import render
    from services.memory import load_shape
    from services.memory.plan import plan_run

    cfg = load_config(PAPER)
    plan = plan_run(load_shape(cfg.model.name_or_path), cfg)
    assert plan.fits
    text = PAPER.read_text()
    for line in render(plan, cfg):  # regenerate with `mathrl plan ... --comment`
        assert f"# {line}" in text, f"{PAPER.name} lacks the plan line {line!r}"


# ------------------------------------------------------------------- training prompt


def test_paper_example_reproduces_format_example():
    q, s, a = PAPER_EXEMPLARS[0]
    assert paper_example(q, s, a) == (
        f"Question: {q}\nSolution: Let's think step by step. There are 15 trees originally. "
        "Then there were 21 trees after some more were planted. So there must have been 21 - 15"
        " = 6. So the answer is 6.\n#### The final answer is 6\n\n")  # ".." -> "."
    assert paper_example("Q?", "a <<2*3=6>>6\nb", "6") == (
        "Question: Q?\nSolution: Let's think step by step. a 6. b.\n"
        "#### The final answer is 6\n\n")
    assert paper_example("Q?", None, None) == "Question: Q?\nSolution: Let's think step by step. "


def test_train_prefix_is_fixed_by_the_seed():
    a, b = paper_train_prefix(2, 0), paper_train_prefix(2, 0)
    assert a == b and a.count("Question: ") == 2 and a != paper_train_prefix(2, 1)
    assert paper_train_prefix(0, 0) == ""
    with pytest.raises(ValueError):
        paper_train_prefix(9, 0)


def test_prompt_cache_renders_the_paper_prompt_cut_from_the_left():
    from orchestrator.run.rollout import PromptCache
    from services.config import DataConfig
    from services.data import Problem
    from services.tinymodel import build_tokenizer

    tok = build_tokenizer()
    data = DataConfig(source="gsm8k", path="x.jsonl", template="question-solution", fewshot=2,
                      max_prompt_tokens=128)
    problems = [Problem(id="0", question="What is 2 + 3?", answer="5")]
    cache = PromptCache.from_config(tok, problems, data, seed=7)
    full = tok(paper_train_prompt(paper_train_prefix(2, 7), "What is 2 + 3?"),
               add_special_tokens=False)["input_ids"]
    assert len(full) > 128 and cache(0) == full[-128:]  # TRL's prompt_ids[:, -128:]
    assert tok.decode(cache(0)).endswith("Question: What is 2 + 3?\nSolution: Let's think "
                                         "step by step. ")
    assert "<|im_start|>" not in tok.decode(cache(0))  # no chat template
    assert left_truncate([1, 2, 3], None) == [1, 2, 3] and left_truncate([1, 2, 3], 2) == [2, 3]


QWEN_MATH_LIKE = (  # Qwen2.5-Math's template in short: a default system message when none
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nPlease reason step by "
    "step, and put your final answer within \\\\boxed{}.<|im_end|>\\n' }}{% endif %}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_zero_shot_prompt_says_the_boxed_instruction_once():
    from services.data import DEFAULT_INSTRUCTION
    from services.tinymodel import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = QWEN_MATH_LIKE
    text = tok.decode(render_prompt(tok, "What is 2 + 3?"))
    assert text.count(DEFAULT_INSTRUCTION) == 1
    assert "<|im_start|>user\nWhat is 2 + 3?<|im_end|>" in text
    # A given system message replaces the default: the instruction goes after the question.
    text = tok.decode(render_prompt(tok, "What is 2 + 3?", system="Be brief."))
    assert text.count(DEFAULT_INSTRUCTION) == 1 and "Be brief." in text
    # A template without it (ChatML) keeps the instruction in the user turn, as before.
    plain = build_tokenizer()
    assert plain.decode(render_prompt(plain, "Q?")).count(DEFAULT_INSTRUCTION) == 1


# ---------------------------------------------------------------------- lr schedule


def test_linear_schedule_matches_transformers():
    import torch
    from transformers import get_linear_schedule_with_warmup

    for warmup, total in ((0, 934), (10, 50)):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-5)
        sched = get_linear_schedule_with_warmup(opt, warmup, total)
        for step in range(total + 2):
            got = 2e-5 * lr_factor(step, total, "linear", warmup)
            assert got == pytest.approx(opt.param_groups[0]["lr"], abs=1e-15), step
            opt.step()
            sched.step()
    assert lr_factor(0, 100, "constant") == lr_factor(99, 100, "constant") == 1.0
    assert lr_factor(5, 100, "constant", 10) == 0.5


def test_scorer_uses_the_papers_rewards():
    from orchestrator.run.rollout import Scorer
    from services.config import RewardConfig
    from services.schemas import Completion

    def c(text: str) -> Completion:
        return Completion(token_ids=[1], logprobs=[0.0], text=text)

    scorer = Scorer(RewardConfig(answer_format="final-answer-line", format_weight=0.5), None)
    try:
        got = scorer.score([[c("8\n#### The final answer is 8\n#### 9"), c("\\boxed{8}")]], ["8"])
    finally:
        scorer.close()
    assert got.rewards == [[1.5, 0.0]] and got.format == [[1.0, 0.0]]
    assert got.correct == [[1.0, 0.0]]


def test_learner_follows_the_linear_schedule(tiny_model_dir, tmp_path):
    """A real learner (tiny model, CPU): each step's `optim/lr` is the schedule's value."""
    from conftest import tiny_config

    from services.learner.learner import Learner
    from services.schemas import TrainBatch, TrainSequence

    cfg = tiny_config(tiny_model_dir, learner__lr=1e-3, learner__lr_schedule="linear",
                      schedule__steps=4)
    learner = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path))
    seqs = [TrainSequence(prompt_ids=[1, 87, 85], completion_ids=[300, 301], advantage=1.0),
            TrainSequence(prompt_ids=[1, 87, 85], completion_ids=[5, 6], advantage=-1.0)]
    lrs = [learner.train_step(TrainBatch(step=i, sequences=seqs)).metrics["optim/lr"]
           for i in range(3)]
    assert lrs == pytest.approx([1e-3, 0.75e-3, 0.5e-3])
