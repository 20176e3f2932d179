#!/usr/bin/env bash
# The CUDA half of benchmarks/memory.py on a lent GPU machine that has torch, transformers and
# peft but no network: installs carried wheels (bitsandbytes, pydantic) from .gpu-wheels/ when
# they are missing, checks the shared-prompt pass on CUDA (tests/test_shared_prompt.py), then
# measures every GPU profile's learner step and the GSM8K-like tokens/s variants.
# Output: $OUT/cuda.{log,json}.
set -uo pipefail
OUT=${OUT:-/tmp/mathrl-gpu}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import sys,torch,transformers,peft;print(sys.version.split()[0],torch.__version__,torch.version.cuda,transformers.__version__,peft.__version__)"
  for mod in pydantic bitsandbytes; do
    python -c "import $mod" 2>/dev/null && continue
    case $mod in
      pydantic) pkgs="pydantic pydantic-core annotated-types typing-inspection" ;;
      *) pkgs=$mod ;;
    esac
    python -m pip install -q --no-index --no-deps --find-links .gpu-wheels $pkgs
  done
  python -c "import bitsandbytes, pydantic; print('bnb', bitsandbytes.__version__, 'pydantic', pydantic.__version__)"
  [ -n "${SKIP_TESTS:-}" ] || python -m pytest -q -p no:cacheprovider tests/test_shared_prompt.py
  time python benchmarks/memory.py --device cuda --work /tmp/mathrl-membench \
    --sequences "${SEQS:-8}" --steps 2 --mix "${MIX:-64}" ${ONLY:+--only "$ONLY"} --json-out "$OUT/cuda.json"
} 2>&1 | tee "$OUT/cuda.log"
