"""The tiny offline model: builds in seconds, loads in transformers, has a chat template."""

from __future__ import annotations

import time

from transformers import AutoModelForCausalLM, AutoTokenizer

from services.tinymodel import build_tiny_model


def test_build_tiny_model(tmp_path):
    t0 = time.perf_counter()
    path = build_tiny_model(tmp_path / "m")
    assert time.perf_counter() - t0 < 60
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "qwen2"
    assert len(tok) == model.config.vocab_size == 512
    enc = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}],
                                  add_generation_prompt=True, tokenize=False)
    assert enc.endswith("<|im_start|>assistant\n")
    digit_tokens = sum(any(c.isdigit() for c in t) for t in tok.convert_ids_to_tokens(
        list(range(len(tok)))))
    assert digit_tokens > 100  # digit-heavy vocabulary: the toy reward has a signal
