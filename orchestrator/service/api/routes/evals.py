"""`/runs/{id}/evals`: evaluate a run's adapter (final or step N) through the serving generator.

The request is checked here, before anything is queued: the benchmarks' files (inside the data
folders), the adapter step (on disk), and that the prompts fit the generator's served context.
The scheduler then runs the job between training steps, or at once when no run is active.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import ValidationError

from orchestrator.run.adapter_eval import request_config
from orchestrator.run.evaluate import eval_length_problem
from orchestrator.service.api.deps import RunDep, ServiceDep, StoreDep
from orchestrator.service.api.limits import PolicyDep
from orchestrator.service.api.records import eval_job_public
from orchestrator.service.api.schemas import EvalJobPublic, EvalJobsPublic, EvalRequest
from services.adapter_files import MissingAdapter, pick_adapter
from services.config import RunConfig

router = APIRouter(prefix="/runs", tags=["evals"])


def _refuse(field: str, msg: str) -> HTTPException:
    return HTTPException(status_code=422, detail=[
        {"loc": ["body", *field.split(".")], "msg": msg, "type": "value_error"}])


def _check(req: EvalRequest, run, store, service, policy) -> None:
    stack = getattr(service, "stack", None)
    if stack is None:
        raise HTTPException(status_code=409, detail="this service has no generator")
    if stack.cfg.generator.sync_mode != "lora" or stack.pool is not None:
        # Merged sync serves one set of weights (the active run's); a pool would need the
        # adapter on every replica. Both are left out for now, said plainly.
        raise HTTPException(status_code=409, detail="evaluating an adapter on request needs "
                            "one generator with sync_mode = 'lora'")
    try:
        pick_adapter(run.run_dir, req.step)
    except MissingAdapter as e:  # as for an export: a step gone 404, none yet 409
        raise HTTPException(status_code=404 if e.steps else 409,
                            detail=f"run {run.id}: {e}") from None
    if req.limit is not None and req.limit > policy.max_eval_problems:
        raise _refuse("limit", f"at most {policy.max_eval_problems} problems "
                               "(MATHRL_MAX_EVAL_PROBLEMS)")
    try:
        cfg = request_config(RunConfig.model_validate(store.config(run.id)),
                             req.model_dump(), max_model_len=stack.served_max_model_len())
    except ValidationError as e:
        raise _refuse("benchmarks", "; ".join(x["msg"] for x in e.errors())) from None
    if (problem := policy.run_problem(cfg)) is not None:
        field, msg = problem  # named as the request names it, not as the run config does
        field = "fewshot_path" if field.endswith("fewshot_path") else \
            field.replace("eval.benchmarks", "benchmarks").removesuffix(".path")
        raise _refuse(field, msg)
    # Prompts rendered with the served tokenizer, as for a submitted run's evaluations.
    if (problem := service.with_tokenizer(lambda tok: eval_length_problem(cfg, tok))):
        field, msg = problem
        raise _refuse(field.removeprefix("eval."), msg)


@router.post("/{run_id}/evals", status_code=202, response_model=EvalJobPublic)
def request_eval(req: EvalRequest, run: RunDep, store: StoreDep, service: ServiceDep,
                 policy: PolicyDep) -> EvalJobPublic:
    """Queue an evaluation of the run's adapter (`step`, default the newest) on `benchmarks`
    under `protocol`, through the generator that is serving. Its result is added to the run's
    `evals` (and its event stream and metrics export) when done; poll
    `GET /runs/{id}/evals/{eval_id}`."""
    _check(req, run, store, service, policy)
    job_id = store.create_eval_job(run.id, req.model_dump())
    return eval_job_public(store.eval_job(job_id))


@router.get("/{run_id}/evals", response_model=EvalJobsPublic)
def list_evals(run: RunDep, store: StoreDep) -> EvalJobsPublic:
    """Evaluations asked for this run, oldest first."""
    return EvalJobsPublic(evals=[eval_job_public(j) for j in store.eval_jobs(run.id)])


@router.get("/{run_id}/evals/{eval_id}", response_model=EvalJobPublic)
def get_eval(eval_id: str, run: RunDep, store: StoreDep) -> EvalJobPublic:
    job = store.eval_job(eval_id)
    if job is None or job.run_id != run.id:
        raise HTTPException(status_code=404, detail=f"no evaluation {eval_id!r} of run {run.id}")
    return eval_job_public(job)
