"""One GPU, one active run: queued runs start in FIFO order on the shared generator/learner.

A run is stepped here (not inside `GRPOLoop.run`) so that cancel requests and shutdown are
checked between steps: a cancelled run stops after its current step and keeps its adapter.
Runs checkpoint every `schedule.checkpoint_every` steps, on cancel and on shutdown; a run that
finds a checkpoint in its folder continues from it (resume), and process faults during a run
are recovered from it (orchestrator/run/recovery.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from orchestrator.run.evaluate import Evaluator
from orchestrator.run.metrics import format_eval
from orchestrator.run.recovery import Recovery
from orchestrator.run.stack import Stack, prepare_run
from orchestrator.run.trackers import open_trackers
from orchestrator.service.recorder import RunRecorder
from orchestrator.service.store import RunStore
from services.config import RunConfig
from services.learner import checkpoint
from services.rewards import GraderPool
from services.rewards.submit_check import start_problem

log = logging.getLogger("mathrl.scheduler")


class Scheduler:
    def __init__(self, store: RunStore, stack: Stack, work_dir: Path, *, poll_s: float = 0.5,
                 resume_active: bool = True, reward_hosts: Sequence[str] | None = None):
        self.store = store
        self.reward_hosts = None if reward_hosts is None else tuple(reward_hosts)
        """MATHRL_REWARD_HOSTS now: a stored run's verifier hosts are checked again when it
        starts (None: not checked, for a scheduler outside the service)."""
        self.stack = stack
        self.work_dir = Path(work_dir)
        self.poll_s = poll_s
        self.resume_active = resume_active
        self.active: str | None = None
        self.handle = None
        """The active run's handle (tests find its learner process through it)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="scheduler", daemon=True)

    def start(self) -> None:
        self.store.fail_unfinished_eval_jobs("the orchestrator stopped during this evaluation; "
                                             "ask for it again")
        for run_id in self.store.ids_with_status("starting", "running"):
            if self.resume_active:
                self.store.requeue(run_id, "the orchestrator restarted: the run resumes from "
                                           "its last checkpoint")
                log.warning("run %s was active when the orchestrator stopped: resumes", run_id)
            else:
                self.store.set_status(run_id, "failed", "orchestrator restarted",
                                      error="the orchestrator stopped while this run was active "
                                            "(resume_active is off; `mathrl resume` continues it)")
                log.warning("run %s was active when the orchestrator stopped: failed", run_id)
        self._thread.start()

    def stop(self, timeout_s: float = 120.0) -> None:
        self._stop.set()
        if self.active is not None:
            log.info("stopping: run %s ends after its current step", self.active)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def queued(self) -> int:
        return len(self.store.ids_with_status("queued"))

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                queued = self.store.ids_with_status("queued")
                if not queued:
                    if not self._eval_jobs():
                        self._stop.wait(self.poll_s)
                    continue
                if not self._generator_ready():
                    continue  # queued runs stay queued until it is back
                self.active = queued[0]
                self._run(queued[0])
            except Exception:  # noqa: BLE001 - one run's (or the store's) error never stops the queue
                log.exception("scheduler: unexpected error around run %s", self.active)
                self._fail_if_active(self.active)
                self._stop.wait(self.poll_s)
            finally:
                self.active = None

    def _generator_ready(self) -> bool:
        """Start no run on a dead generator: restart the one we launched (its watchdog role
        between runs), or wait for one at a URL; queued runs keep their place meanwhile."""
        if self.stack.generator_up():
            return True
        log.warning("the generator is down; queued runs wait for it")
        if getattr(self.stack, "launches_generator", False):
            try:
                log.warning(self.stack.recover_generator())
                return True
            except Exception as e:  # noqa: BLE001 - try again at the next poll
                log.warning("generator restart failed: %s", e)
        self._stop.wait(max(self.poll_s, 5.0))
        return False

    def _eval_jobs(self) -> bool:
        """Run the evaluations asked for over the API, oldest first; True if any ran."""
        jobs = self.store.eval_jobs(status="queued")
        for job in jobs:
            if self._stop.is_set():
                break
            self._eval_job(job)
        return bool(jobs)

    def _eval_job(self, job) -> None:
        """One requested evaluation: the adapter of its step is loaded into the serving
        generator under a name of its own, evaluated, and unloaded. Its failure is the job's,
        never the active run's or the scheduler's."""
        from transformers import AutoTokenizer

        from orchestrator.run.adapter_eval import evaluate_adapter, request_config
        from services.adapter_files import pick_adapter

        store, req = self.store, job.request
        try:
            run = store.get(job.run_id)
            step, folder = pick_adapter(run.run_dir, req.get("step"))
            store.start_eval_job(job.id, step)
            cfg = request_config(RunConfig.model_validate(store.config(run.id)), req,
                                 max_model_len=self.stack.served_max_model_len())
            tokenizer = AutoTokenizer.from_pretrained(self.stack.model_path)
            log.info("evaluation %s of run %s (adapter step %d): %s under the %s protocol",
                     job.id, run.id, step, ", ".join(req["benchmarks"]), req["protocol"])
            with GraderPool(n_workers=cfg.reward.num_workers,
                            timeout_s=cfg.reward.timeout_s) as pool:
                result = evaluate_adapter(
                    cfg, tokenizer, self.stack.client, pool, adapter=folder,
                    name=f"{run.name}-{run.id[:6]}-eval-{job.id[:6]}",
                    report_dir=Path(run.run_dir) / "evals" / f"request-{job.id}", step=step)
            result.update(protocol=req["protocol"], requested=job.id)
            store.finish_eval_job(job.id, result=result)
            log.info("evaluation %s done: %s", job.id, format_eval(step, result))
        except Exception as e:  # noqa: BLE001 - recorded on the job
            log.warning("evaluation %s of run %s failed: %s", job.id, job.run_id, e)
            store.finish_eval_job(job.id, error=f"{type(e).__name__}: {e}"[:2000])

    def _fail_if_active(self, run_id: str | None) -> None:
        if run_id is None:
            return
        try:
            run = self.store.get(run_id)
            if run is not None and run.status in ("queued", "starting", "running"):
                self.store.set_status(run_id, "failed", "scheduler error",
                                      error="the scheduler hit an unexpected error (see the log)")
        except Exception:  # noqa: BLE001 - the store itself may be what failed
            log.exception("scheduler: could not mark run %s failed", run_id)

    @staticmethod
    def _checkpoint(loop, root: Path, rec: RunRecorder) -> None:
        try:
            loop.checkpoint(str(root))
        except Exception as e:  # noqa: BLE001 - a failed write keeps the previous checkpoint
            rec.note(loop.state.step, f"checkpoint at step {loop.state.step} failed "
                                      f"({type(e).__name__}: {e}); the previous one is kept")

    def _run(self, run_id: str) -> None:
        store = self.store
        cfg = RunConfig.model_validate(store.config(run_id))
        rec = RunRecorder(store, run_id, cfg.name, cfg.schedule.steps)
        if not rec.claim():
            return  # cancelled between the pick and now
        run_dir = self.work_dir / "runs" / run_id
        store.set_run_dir(run_id, str(run_dir))
        handle = eval_pool = None
        step = 0
        try:
            if self.reward_hosts is not None and (
                    msg := start_problem(cfg.reward, self.reward_hosts)) is not None:
                raise RuntimeError(f"the run may no longer start: {msg}")
            rec.trackers = open_trackers(cfg, run_dir, name=f"{cfg.name}-{run_id}")
            log.info("run %s: run dir %s, trackers: %s", run_id, run_dir, rec.trackers.describe())
            handle = self.handle = prepare_run(self.stack, cfg, run_dir,
                                               run_name=f"{cfg.name}-{run_id[:6]}")
            loop = handle.loop
            if store.cancel_requested(run_id):  # asked while the learner was loading
                rec.status("cancelled", "cancelled while starting",
                           error="cancelled by request while the run was starting")
                return
            resumed = self._resume_or_start(handle, store.get(run_id).step, rec)
            step = loop.state.step
            recovery = Recovery(self.stack, handle, note=rec.note)
            evaluate = None
            if cfg.eval.enabled:
                eval_pool = GraderPool(n_workers=cfg.reward.num_workers,
                                       timeout_s=cfg.reward.timeout_s)
                # A pool's evaluation prompts are not counted as its training prompts.
                pool = getattr(self.stack, "pool", None)
                client = pool.for_eval() if pool is not None else self.stack.client
                evaluate = Evaluator(cfg, handle.scorer.tokenizer, client, eval_pool,
                                     report_dir=run_dir / "evals", step=lambda: loop.state.step)
                if not resumed:
                    rec.eval(0, evaluate(handle.sync.served))
            rec.status("running", "generator and learner ready" if not resumed
                       else f"resumed at step {step}")
            while loop.state.step < cfg.schedule.steps:
                if store.cancel_requested(run_id):
                    self._checkpoint(loop, handle.checkpoints, rec)
                    rec.status("cancelled", f"cancelled after step {step}",
                               error=f"cancelled by request after step {step}")
                    return
                if self._stop.is_set():
                    self._checkpoint(loop, handle.checkpoints, rec)
                    # Left `running`: the next orchestrator start resumes it (resume_active).
                    rec.note(step, f"the orchestrator shut down after step {step}; the run is "
                                   "checkpointed and resumes when it starts again")
                    return
                try:
                    metrics = loop.step()
                except Exception as e:
                    if recovery.handle_fault(e):
                        step = loop.state.step
                        continue
                    raise
                step = loop.state.step
                ref = loop.last_adapter
                rec.step(step, metrics, handle.sync.served, ref.path if ref else None)
                for text in handle.scorer.take_notes():  # a reward function's first failure
                    rec.note(step, text)
                for text in self.stack.generator_events():  # replicas lost, back, recycled
                    rec.note(step, text)
                if step % cfg.schedule.checkpoint_every == 0 or step == cfg.schedule.steps:
                    self._checkpoint(loop, handle.checkpoints, rec)
                if step < cfg.schedule.steps:
                    recovery.recycle_generator(step)
                    self._eval_jobs()  # asked over the API: between steps, not after the run
                every = cfg.eval.every_n_steps
                if evaluate and every and step % every == 0 and step < cfg.schedule.steps:
                    rec.eval(step, evaluate(handle.sync.served))
            if evaluate:
                rec.eval(step, evaluate(handle.sync.served))
            rec.status("completed", f"{step} steps")
        except Exception as e:  # noqa: BLE001 - any failure ends this run, not the service
            log.debug("run %s failed at step %d", run_id, step, exc_info=True)  # file only
            for text in self.stack.generator_events():  # what the replicas went through
                rec.note(step, text)
            rec.status("failed", f"error at step {step}",
                       error=f"step {step}: {type(e).__name__}: {e}"[:4000])
        finally:
            self.handle = None
            rec.close()
            if eval_pool is not None:
                eval_pool.close()
            if handle is not None:
                handle.close()

    def _resume_or_start(self, handle, recorded_step: int, rec: RunRecorder) -> bool:
        """Continue from the run's newest checkpoint if it has one (True); else checkpoint the
        fresh start as step 0, so that any fault has a state to come back to."""
        loop = handle.loop
        ckpt = checkpoint.latest(handle.checkpoints)
        if ckpt is None:
            self._checkpoint(loop, handle.checkpoints, rec)
            return False
        loop.restore(str(ckpt))
        k = loop.state.step
        lost = (f"; steps {k + 1}-{recorded_step} were not checkpointed and are redone"
                if recorded_step > k else "")
        rec.note(k, f"resumed from the checkpoint of step {k}{lost}")
        return True
