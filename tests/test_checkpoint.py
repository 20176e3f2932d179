"""Checkpoints are atomic and complete: a failed write keeps the previous one; a learner
restored from one continues exactly (weights, optimizer, RNG, version)."""

from __future__ import annotations

import errno

import pytest
import torch
from conftest import tiny_config

from services.learner import checkpoint
from services.learner.learner import Learner
from services.schemas import TrainBatch, TrainSequence


def _batch() -> TrainBatch:
    prompt = [1, 87, 85, 71, 84, 201, 2, 201, 1, 273]
    return TrainBatch(step=0, sequences=[
        TrainSequence(prompt_ids=prompt, completion_ids=[300, 301, 302], advantage=1.0),
        TrainSequence(prompt_ids=prompt[:7], completion_ids=[5, 6, 7, 8], advantage=-1.0),
    ])


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    root = tmp_path / "ckpt"
    checkpoint.write(root, 1, lambda d: (d / "a.bin").write_bytes(b"one"), {"x": 1}, keep=2)

    def disk_full(d):
        (d / "a.bin").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        checkpoint.write(root, 2, disk_full, {"x": 2}, keep=2)
    assert [p.name for p in root.iterdir()] == ["step-1"]  # no half-written step-2 or .tmp
    assert checkpoint.latest(root).name == "step-1"
    assert (root / "step-1" / "a.bin").read_bytes() == b"one"
    assert checkpoint.read_meta(root / "step-1") == {"step": 1, "x": 1}
    # A folder without meta.json (a crash before the rename completed) is never "latest".
    (root / "step-9").mkdir()
    assert checkpoint.latest(root).name == "step-1"


def test_keep_only_the_newest(tmp_path):
    root = tmp_path / "ckpt"
    for step in range(5):
        checkpoint.write(root, step, lambda d: None, {}, keep=2)
    assert [s for s, _ in checkpoint.checkpoints(root)] == [3, 4]


def test_restored_learner_continues_exactly(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, learner__lr=0.05)
    a = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path / "a"))
    a.train_step(_batch())
    path = a.save_checkpoint(str(tmp_path / "ckpt"), {"step": 1, "sampler": {}}, 2)
    a.train_step(_batch())
    want = {n: p.detach().clone() for n, p in a.model.named_parameters() if p.requires_grad}
    noise_a = torch.rand(3)

    # A fresh learner (different seed: different LoRA init) restored from the checkpoint.
    b = Learner(tiny_config(tiny_model_dir, learner__lr=0.05, schedule__seed=7),
                model_path=str(tiny_model_dir), run_dir=str(tmp_path / "b"))
    a2 = Learner(cfg, model_path=str(tiny_model_dir), run_dir=str(tmp_path / "c"))
    assert b.load_checkpoint(path) == {"step": 1, "sampler": {}}
    assert b.version == 1
    a2.load_checkpoint(path)
    b.train_step(_batch())
    got = {n: p.detach() for n, p in b.model.named_parameters() if p.requires_grad}
    for n in want:  # same weights after the same update: optimizer state was restored too
        torch.testing.assert_close(got[n], want[n], atol=1e-6, rtol=1e-5, msg=n)
    assert b.version == 2
    # The RNG continues where the checkpointed learner's did after its save.
    a2.train_step(_batch())
    torch.testing.assert_close(torch.rand(3), noise_a)
