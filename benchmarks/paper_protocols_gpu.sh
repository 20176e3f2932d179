#!/usr/bin/env bash
# Qwen2.5-Math-1.5B (base) on GSM8K under the two published protocols, on a CUDA machine with
# mathrl and vLLM for CUDA installed (`pip install -e '.[gpu]'`, Python 3.11) and the model
# in the Hugging Face cache or at $MODEL:
#   paper: the YouronMath paper's eval_gsm8k.py (8 GSM8K train solutions drawn with seed 42,
#          greedy, 512 new tokens, last-number fallback); the paper reports 71.65 for this model
#   qwen:  Qwen2.5-Math's qwen25-math-cot (boxed instruction as the system message, greedy,
#          2048 new tokens, its parser); also on MATH-500, AIME24 and AMC23
# Whole test sets; every figure printed with n and its standard error.
#   MODEL=/path/to/Qwen2.5-Math-1.5B DATA=../shared/data OUT=/tmp/mathrl-protocols \
#     bash benchmarks/paper_protocols_gpu.sh
# Output: $OUT/{paper,qwen}-*.json (every prompt, completion and verdict) and $OUT/protocols.log.
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen2.5-Math-1.5B}
DATA=${DATA:-../shared/data}
OUT=${OUT:-/tmp/mathrl-protocols}
MATHRL=${MATHRL:-mathrl}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  # The 8-shot prompts run to ~1,700-2,048 tokens (the paper cuts at 2,048), + 512 new.
  time "$MATHRL" eval --model "$MODEL" --protocol paper --max-model-len 2560 \
    --dataset "gsm8k=$DATA/gsm8k/test.jsonl" --fewshot-path "$DATA/gsm8k/train.jsonl" \
    --concurrency 256 --out "$OUT/paper-gsm8k.json"
  time "$MATHRL" eval --model "$MODEL" --protocol qwen --max-model-len 4096 \
    --dataset "gsm8k=$DATA/gsm8k/test.jsonl,math500=$DATA/math500/test.jsonl,aime24=$DATA/aime24/test.jsonl,amc23=$DATA/amc23/test.jsonl" \
    --concurrency 256 --out "$OUT/qwen.json"
} 2>&1 | tee "$OUT/protocols.log"
