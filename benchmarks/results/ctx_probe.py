"""CUDA context of a bare torch process: nvidia-smi's per-process memory after one bf16 matmul,
minus what torch's allocator reserved (run on the GPU machine; figures in docs/benchmarks.md)."""

import os
import subprocess

import torch


def used() -> str:
    return subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                           "--format=csv,noheader,nounits"],
                          capture_output=True, text=True).stdout.strip()


print("apps before:", used())
a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
(a @ a).sum().item()
free, total = torch.cuda.mem_get_info()
print("pid", os.getpid(), "apps after:", used(),
      "reserved MiB", torch.cuda.memory_reserved() / 2**20,
      "used-reserved MiB", (total - free - torch.cuda.memory_reserved()) / 2**20)
