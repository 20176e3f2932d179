"""The LoRA learner: one GRPO optimizer step per batch, then the new policy is written out.

Plain Python; the orchestrator runs it as a Ray actor in its own process. It trains on the
exact token ids the generator sampled (the batch carries ids, never text).
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import time
from pathlib import Path

import torch

from services.adapter_files import STEP_DIR, adapter_dir_name, read_adapter
from services.config import RunConfig
from services.learner import checkpoint, export
from services.learner.cpu_memory import ROW_MULTIPLE, bound_onednn_cache, release_free_heap
from services.learner.grpo import policy_loss, tis_weights
from services.learner.logprobs import completion_logprobs
from services.learner.memcap import MemoryCap, use_expandable_segments
from services.learner.model import (
    autocast,
    build_optimizer,
    load_policy,
    pad_batch,
    pick_device,
    torch_dtype,
)
from services.learner.packing import (
    group_by_prompt,
    grouped_padding_share,
    pack_by_tokens,
    pack_groups,
    padding_share,
)
from services.learner.schedule import lr_factor
from services.learner.shared_prompt import grouped_logprobs
from services.schemas import AdapterRef, LearnResult, TrainBatch, TrainSequence


class Learner:
    def __init__(self, cfg: RunConfig, *, model_path: str, run_dir: str,
                 served_model_dir: str | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.adapters_dir = self.run_dir / "adapters"
        self.served_model_dir = served_model_dir
        if cfg.generator.sync_mode == "merged" and not served_model_dir:
            raise ValueError("merged sync needs the directory the generator serves")
        # Ray sets OMP_NUM_THREADS=1 in workers; a learner on a CPU wants every core.
        torch.set_num_threads(cfg.learner.num_threads or os.cpu_count() or 1)
        seed = cfg.schedule.seed
        random.seed(seed)
        torch.manual_seed(seed)
        self.device = pick_device(cfg.learner)
        if self.device == "cpu":
            bound_onednn_cache()
        self.dtype = torch_dtype(cfg.model, self.device)
        # oneDNN's bf16 primitives hold reordered weights per matmul shape: few row widths keep
        # that cache small (cpu_memory.py). fp32 stayed flat without it, and CUDA is unmeasured.
        bf16_cpu = self.device == "cpu" and self.dtype == torch.bfloat16
        self.row_multiple = ROW_MULTIPLE if bf16_cpu else 1
        # Cap before loading, so even the load cannot take the generator's share.
        self.memcap = None
        if self.device == "cuda":
            use_expandable_segments()
            self.memcap = MemoryCap.from_plan(cfg, model_path)
        self.model = load_policy(model_path, cfg.model, cfg.lora, cfg.learner, self.device)
        self.pad_id = self.model.config.pad_token_id or 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, cfg.learner, self.device)
        self.version = 0
        self.lineage = ""
        """Tag of the adapter folders published since the last checkpoint restore (none
        before one): a redone version must not reuse its predecessor's folder (sync.py)."""

    # ------------------------------------------------------------------ policy export
    def publish(self) -> AdapterRef:
        """Write the current policy where the generator can load it; returns its reference."""
        if self.cfg.generator.sync_mode == "merged":
            export.write_merged(self.model, self.served_model_dir)
            return AdapterRef(version=self.version, path=self.served_model_dir, kind="merged")
        path = self.adapters_dir / adapter_dir_name(self.version, self.lineage)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp, safe_serialization=True)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)  # atomic: vLLM never sees a half-written adapter
        return AdapterRef(version=self.version, path=str(path.resolve()), kind="lora")

    def adapter_files(self, path: str) -> dict[str, bytes]:
        """A published adapter's files, for nodes that cannot read this node's disk
        (`generator.adapter_transport = "ray"`)."""
        return read_adapter(path)

    def remove_adapters(self, paths: list[str]) -> None:
        """Delete published `step-N` folders no generator serves any more (only this run's)."""
        for p in map(Path, paths):
            if p.parent.resolve() == self.adapters_dir.resolve() and p.name.startswith("step-"):
                shutil.rmtree(p, ignore_errors=True)

    # ------------------------------------------------------------------ training
    def _micro_batches(self, seqs: list[TrainSequence]
                       ) -> tuple[list[list[list[TrainSequence]]], float, int]:
        """Micro-batches as runs of sequences (a run shares one prompt pass in the
        shared-prompt mode; one sequence each otherwise), the share of computed positions that
        is padding, and the positions computed."""
        lc = self.cfg.learner
        if lc.shared_prompt:
            p_lens = [len(s.prompt_ids) for s in seqs]
            c_lens = [len(s.completion_ids) for s in seqs]
            groups = group_by_prompt([s.prompt_ids for s in seqs])
            max_rows = lc.micro_batch_size if lc.micro_batch_tokens is None else None
            batches = pack_groups(p_lens, c_lens, groups, lc.micro_batch_tokens, max_rows,
                                  width_multiple=self.row_multiple)
            padding, positions = grouped_padding_share(p_lens, c_lens, batches,
                                                       self.row_multiple)
            return [[[seqs[i] for i in r] for r in b] for b in batches], padding, positions
        lengths = [len(s.prompt_ids) + len(s.completion_ids) for s in seqs]
        if lc.micro_batch_tokens is None:
            k = lc.micro_batch_size
            flat = [list(range(i, min(i + k, len(seqs)))) for i in range(0, len(seqs), k)]
        else:
            flat = pack_by_tokens(lengths, lc.micro_batch_tokens)
        padding, positions = padding_share(lengths, flat)
        return [[[seqs[i]] for i in g] for g in flat], padding, positions

    def _logprobs(self, runs: list[list[TrainSequence]]):
        """Completion log-probs of a micro-batch, rows in run order."""
        temp, chunk = self.cfg.rollout.temperature, self.cfg.learner.logprob_chunk_tokens
        if self.cfg.learner.shared_prompt:
            with autocast(self.device, self.dtype):
                return grouped_logprobs(
                    self.model, [r[0].prompt_ids for r in runs],
                    [[s.completion_ids for s in r] for r in runs], pad_id=self.pad_id,
                    temperature=temp, chunk=chunk or 128, width_multiple=self.row_multiple)
        seqs = [s for r in runs for s in r]
        full = [s.prompt_ids + s.completion_ids for s in seqs]
        ids, attn = pad_batch(full, self.pad_id, self.device)
        with autocast(self.device, self.dtype):
            return completion_logprobs(
                self.model, ids, attn, [len(s.prompt_ids) for s in seqs],
                [len(f) for f in full], temperature=temp, chunk=chunk,
            )

    def train_step(self, batch: TrainBatch) -> LearnResult:
        """One optimizer step over the whole batch (gradients accumulated over micro-batches)."""
        try:
            return self._train_step(batch)
        except torch.OutOfMemoryError as e:
            if self.memcap is None:
                raise
            self.optimizer.zero_grad(set_to_none=True)
            raise RuntimeError(self.memcap.explain(e)) from None
        finally:
            if self.memcap is not None:
                # Hand activation memory back to the driver between steps: the generator
                # (waking from sleep, or another process) must find the card as the plan left it.
                torch.cuda.empty_cache()
            elif self.device == "cpu":
                release_free_heap()  # freed activations back to the OS, not our heap

    def _train_step(self, batch: TrainBatch) -> LearnResult:
        t0 = time.perf_counter()
        alg = self.cfg.algorithm
        seqs = [s for s in batch.sequences if s.completion_ids]
        if not seqs:
            raise ValueError("batch has no completion tokens")
        n_tokens = sum(len(s.completion_ids) for s in seqs)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss/policy": 0.0, "loss/kl": 0.0, "loss/clip_frac": 0.0}
        tis = {"off_policy/is_weight_mean": 0.0, "off_policy/clipped_frac": 0.0}
        use_tis = alg.tis_cap is not None and all(s.sampler_logprobs for s in seqs)
        sampler_diff, sampler_n = 0.0, 0
        micro_batches, padding, positions = self._micro_batches(seqs)
        for runs in micro_batches:
            mb = [s for r in runs for s in r]
            mb_tokens = sum(len(s.completion_ids) for s in mb)
            # Micro-batch losses are weighted so their sum equals the loss of the whole batch
            # under the chosen aggregation (token share for token_mean, sequence share else).
            weight = mb_tokens / n_tokens if alg.loss_agg == "token_mean" else len(mb) / len(seqs)
            ref = None
            if alg.beta > 0:
                with torch.no_grad(), self.model.disable_adapter():
                    ref, _ = self._logprobs(runs)
            logps, mask = self._logprobs(runs)
            adv = torch.tensor([s.advantage for s in mb], dtype=logps.dtype, device=logps.device)
            weights = None
            if use_tis:
                sampler = torch.zeros_like(logps)
                for i, s in enumerate(mb):
                    n = len(s.completion_ids)
                    sampler[i, :n] = torch.tensor(s.sampler_logprobs[:n], dtype=logps.dtype)
                weights, tm = tis_weights(logps, sampler, mask, cap=alg.tis_cap)
                share = mb_tokens / n_tokens  # token-weighted, like the metrics' definition
                for k in tis:
                    tis[k] += tm[k] * share
            # On-policy with one optimizer step per batch: old = current (ratio 1, as in TRL's
            # num_iterations=1); clipping matters once batches are reused or run off-policy.
            loss, m = policy_loss(
                logps, logps.detach(), adv, mask, eps_low=alg.eps_low, eps_high=alg.eps_high,
                ref_logprobs=ref, beta=alg.beta, agg=alg.loss_agg,
                max_tokens=self.cfg.rollout.max_new_tokens, is_weights=weights,
            )
            (loss * weight).backward()
            for k in sums:
                sums[k] += m.get(k, 0.0) * weight
            for i, s in enumerate(mb):
                if s.sampler_logprobs:
                    n = len(s.completion_ids)
                    own = logps[i, :n].detach().cpu()
                    sampler_diff += (own - torch.tensor(s.sampler_logprobs[:n])).abs().sum().item()
                    sampler_n += n
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.learner.max_grad_norm)
        lc = self.cfg.learner
        # The version counts optimizer steps and is restored with a checkpoint: the schedule
        # is a function of it, with no scheduler state of its own.
        lr = lc.lr * lr_factor(self.version, self.cfg.schedule.steps, lc.lr_schedule,
                               lc.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.version += 1
        t_learn = time.perf_counter() - t0
        t1 = time.perf_counter()
        ref = self.publish()
        metrics = {
            **sums,
            **(tis if use_tis else {}),
            "perf/learner_tokens_per_s": n_tokens / max(t_learn, 1e-9),
            "perf/padding_share": padding,
            # Decoder positions run, padding included: what the shared prompt pass saves.
            "perf/learner_positions": float(positions),
            "optim/grad_norm": float(grad_norm),
            "optim/lr": self.optimizer.param_groups[0]["lr"],
            "learner/tokens": float(n_tokens),
            "time/learn": t_learn,
            "time/save": time.perf_counter() - t1,
        }
        if sampler_n:
            # Mismatch between learner and sampler log-probs (numerics, or staleness).
            metrics["learner/sampler_logprob_abs_diff"] = sampler_diff / sampler_n
        return LearnResult(metrics=metrics, adapter=ref)

    # ------------------------------------------------------------------ inspection
    @torch.no_grad()
    def greedy(self, prompt_ids: list[int], max_new_tokens: int, *, adapter: bool = True
               ) -> list[int]:
        """transformers + peft greedy completion (used to check that sync is exact)."""
        self.model.eval()
        ids = torch.tensor([prompt_ids], device=self.device)
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                      pad_token_id=self.pad_id)
        if adapter:
            out = self.model.generate(input_ids=ids, **kwargs)
        else:
            with self.model.disable_adapter():
                out = self.model.generate(input_ids=ids, **kwargs)
        return out[0, len(prompt_ids) :].tolist()

    def ping(self) -> int:
        return self.version

    def pid(self) -> int:
        """This process (tests kill it to check that a run survives its learner)."""
        return os.getpid()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, root: str, loop_state: dict, keep: int) -> str:
        """Adapter, optimizer state, policy version, every RNG and the loop's state (step,
        sampler, served version), written atomically as `<root>/step-<step>`."""
        def fill(tmp: Path) -> None:
            self.model.save_pretrained(tmp / "adapter", safe_serialization=True)
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            rng = {"python": random.getstate(), "torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            torch.save(rng, tmp / "rng.pt")

        step = int(loop_state["step"])
        meta = {"version": self.version, "loop": loop_state}
        return str(checkpoint.write(root, step, fill, meta, keep=keep))

    def load_checkpoint(self, path: str) -> dict:
        """Restore what `save_checkpoint` wrote; returns the loop's state."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        path = Path(path)
        meta = checkpoint.read_meta(path)
        weights = load_file(str(path / "adapter" / "adapter_model.safetensors"),
                            device=self.device)
        set_peft_model_state_dict(self.model, weights)
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False,
                                                  map_location=self.device))
        rng = torch.load(path / "rng.pt", weights_only=False)
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.version = int(meta["version"])
        # Random, not counted: a count would start again in a respawned learner or a restarted
        # orchestrator, while the generator and its prefix cache may live on.
        self.lineage = secrets.token_hex(3)
        self._drop_discarded()
        return meta["loop"]

    def _drop_discarded(self) -> None:
        """Delete the published folders of versions past the restored one: their weights are
        discarded, and the versions are published again (in new folders) as the run redoes
        them, so an export of step N is always the run's own step N."""
        if not self.adapters_dir.is_dir():
            return
        for p in self.adapters_dir.iterdir():
            m = STEP_DIR.match(p.name)
            if m and int(m.group(1)) > self.version:
                shutil.rmtree(p, ignore_errors=True)
