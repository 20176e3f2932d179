"""`mathrl eval --model M [--adapter DIR | --compare DIR] --dataset gsm8k,math500 [--samples K]`:
benchmarks of a model (and a LoRA adapter) through a vLLM server launched for the purpose.

One server start serves the base model and, with `--compare`, the adapter too, so both are
measured on the same problems with the same prompts. The JSON report holds the config, every
problem's prompt, completions, extracted answers and verdicts, and the summaries.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from orchestrator.cli.eval_report import load_dataset, parse_datasets, table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_config(model: str, *, max_model_len: int, max_new_tokens: int, rank: int,
                  concurrency: int, samples: int, port: int = 8100):
    """The run config the eval's vLLM is launched from: room for every sequence in flight
    (`concurrency` requests of `samples` completions, at most 256), each up to max_model_len,
    and LoRA slots of the adapter's rank."""
    from services.config import (
        GeneratorConfig,
        LoraConfig,
        ModelConfig,
        RolloutConfig,
        RunConfig,
        vllm_rank_for,
    )

    gen = GeneratorConfig(port=port, max_lora_rank=vllm_rank_for(max(rank, 16)),
                          max_num_seqs=min(256, max(concurrency * max(samples, 1), 2)))
    # The rollout section only bounds max_new_tokens here: the eval plan sizes the KV cache
    # from max_num_seqs x max_model_len, not from a GRPO step.
    return RunConfig(model=ModelConfig(name_or_path=model, max_model_len=max_model_len),
                     lora=LoraConfig(rank=rank), generator=gen,
                     rollout=RolloutConfig(max_new_tokens=min(max_new_tokens, max_model_len - 1),
                                           prompts_per_step=1, group_size=2))


def server_plan(cfg, model_path: str, *, cuda: bool, card_bytes: int, card_name: str = ""):
    """(config, memory plan of vLLM alone on the card or None without a config.json to plan
    from, None or the message refusing a server that cannot fit). On CUDA, when every sequence
    in flight does not fit at max_model_len, the config keeps as many as do (vLLM queues the
    other requests: same results, later); refused when not even one does."""
    from services.generator.launcher import MAX_SHARE
    from services.memory import GiB, load_shape
    from services.memory.plan import plan_serving

    try:
        shape = load_shape(model_path)
    except FileNotFoundError:
        return cfg, None, None  # vLLM then sizes its cache itself

    def with_seqs(n: int):
        c = cfg.model_copy(update={"generator": cfg.generator.model_copy(
            update={"max_num_seqs": n})})
        return c, plan_serving(shape, c, card_bytes=card_bytes, cuda=cuda, card_name=card_name)

    def fits(plan) -> bool:  # and within the largest share the launcher passes to vLLM
        return plan.fits and plan.generator.total <= MAX_SHARE * card_bytes

    wanted = cfg.generator.max_num_seqs
    fitted, plan = with_seqs(wanted)
    if not cuda or fits(plan):
        return fitted, plan, None
    for n in range(wanted - 1, 0, -1):  # at most 255 pure plans
        fitted, smaller = with_seqs(n)
        if fits(smaller):
            return fitted, smaller, None
    kv = plan.generator.components["kv_cache"]
    return cfg, plan, (
        f"vLLM needs {with_seqs(1)[1].total / GiB:.2f} GiB for even one sequence of "
        f"{cfg.model.max_model_len} tokens ({plan.total / GiB:.2f} GiB for {wanted}, KV cache "
        f"{kv / GiB:.2f} GiB) on a {plan.card_name}: lower --max-model-len, or give a bigger "
        f"card with --gpu-gb"
    )


def eval_command(
    dataset: Annotated[str, typer.Option(help="Comma-separated: gsm8k, math500, aime24, amc23 "
                                         "(HF), NAME=FILE, a JSON/JSONL file, arith, a skill "
                                         "(sum2, ...), HF name")],
    model: Annotated[str | None, typer.Option(
        help="Base model: hub id or local directory (a vLLM is launched for it)")] = None,
    run: Annotated[str | None, typer.Option(
        "--run", help="Evaluate this run's adapter through the running service's generator "
                      "(no vLLM is launched: the one that serves is used)")] = None,
    step: Annotated[int | None, typer.Option(
        min=0, help="With --run: the adapter of this step (default: the newest)")] = None,
    url: Annotated[str | None, typer.Option(
        "--url", envvar="MATHRL_URL", help="With --run: the API (default 127.0.0.1:8000)")
    ] = None,
    adapter: Annotated[Path | None, typer.Option(help="Evaluate this LoRA adapter")] = None,
    compare: Annotated[Path | None, typer.Option(
        help="Evaluate the base model and this LoRA adapter in one server start")] = None,
    limit: Annotated[int | None, typer.Option(
        min=1, help="First N problems of each (default: the whole set)")] = None,
    samples: Annotated[int, typer.Option(min=0, help="k samples for mean@k/maj@k/pass@k")] = 0,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.6,
    prompt: Annotated[Literal["zero-shot", "few-shot"], typer.Option(
        help="zero-shot: chat template + boxed instruction; few-shot: GSM8K 8-shot CoT")
    ] = "zero-shot",
    protocol: Annotated[Literal["mathrl", "paper", "qwen"], typer.Option(
        help="mathrl: --prompt + the reward's grader; paper: YouronMath's eval_gsm8k.py "
             "(8 train shots, seed 42, 512 tokens, last-number fallback); qwen: Qwen2.5-Math's "
             "qwen25-math-cot (2048 tokens, its parser)")] = "mathrl",
    fewshot_path: Annotated[Path | None, typer.Option(
        help="GSM8K train JSONL of the paper protocol's shots (default: train.jsonl beside "
             "the gsm8k file, else the HF train split)")] = None,
    question_field: Annotated[str | None, typer.Option(help="Question field of a file")] = None,
    answer_field: Annotated[str | None, typer.Option(help="Answer field of a file")] = None,
    split: str = "test",
    max_new_tokens: Annotated[int | None, typer.Option(
        min=1, help="Default: the protocol's (paper 512, qwen 2048), else 512")] = None,
    max_model_len: Annotated[int, typer.Option(min=64)] = 2048,
    instruction: str | None = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once")] = 32,
    request_timeout: Annotated[float, typer.Option(
        min=1.0, help="Seconds one generation request may take (a 2,048-token answer among "
                      "many in flight on a CPU can pass 10 minutes)")] = 3600.0,
    out: Annotated[Path, typer.Option(help="Where the JSON report goes")] = Path(
        "eval-report.json"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    gpu_gb: Annotated[float | None, typer.Option(
        "--gpu-gb", min=1.0, help="Card size as sold (GB); default: what CUDA reports")] = None,
) -> None:
    """Greedy score (and mean@k, maj@k, pass@k with --samples) of MODEL (+ ADAPTER), each
    with n and its standard error, strict and lenient side by side, under one evaluation
    protocol."""
    if run is not None:
        from orchestrator.cli.eval_remote import eval_run

        if model or adapter or compare:
            raise typer.BadParameter("--run evaluates the run's own adapter on its base model: "
                                     "give no --model, --adapter or --compare with it")
        eval_run(run, url=url, benchmarks=[d.strip() for d in dataset.split(",") if d.strip()],
                 protocol=protocol, limit=limit, samples=samples, step=step, prompt=prompt,
                 max_new_tokens=max_new_tokens, json_out=json_out,
                 fewshot_path=str(fewshot_path) if fewshot_path else None)
        return
    if model is None:
        raise typer.BadParameter("give --model (a vLLM is launched for it) or --run RUN_ID")
    if adapter is not None and compare is not None:
        raise typer.BadParameter("give --adapter or --compare, not both")
    try:
        datasets = parse_datasets(dataset)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--dataset") from e
    # Heavy imports here, not at module level: they would slow every `mathrl` verb.
    from transformers import AutoTokenizer

    from orchestrator.run.stack import resolve_model_path
    from services.data import DEFAULT_INSTRUCTION
    from services.evals import BenchmarkTask, run_benchmark
    from services.evals.protocols import fewshot_source, get_protocol, gsm8k_train_pairs
    from services.generator.client import GeneratorClient
    from services.generator.launcher import cuda_total_bytes, detect_device, launch
    from services.memory.plan import card_of
    from services.rewards import GraderPool

    problems = {name: load_dataset(name, path, limit=limit, split=split,
                                   question_field=question_field, answer_field=answer_field)
                for name, path in datasets}
    model_path = resolve_model_path(model)
    pairs = None
    if protocol == "paper":
        gsm8k_file = fewshot_path or fewshot_source(dict(datasets).get("gsm8k"), None)
        pairs = gsm8k_train_pairs(gsm8k_file)
    proto = get_protocol(protocol, style=prompt, train_pairs=pairs)
    max_new_tokens = max_new_tokens or proto.max_tokens or 512
    ins = DEFAULT_INSTRUCTION if instruction is None else instruction
    tok = AutoTokenizer.from_pretrained(model_path)
    tasks = [BenchmarkTask(name=name, problems=probs,
                           prompts=[proto.render(tok, p.question, instruction=ins)
                                    for p in probs],
                           samples=samples, temperature=temperature,
                           max_tokens=max_new_tokens, stop=proto.stop, protocol=proto)
             for name, probs in problems.items()]
    longest = max(len(ids) for t in tasks for ids in t.prompts)
    if longest + max_new_tokens > max_model_len:
        raise typer.BadParameter(f"the longest prompt ({longest} tokens) + {max_new_tokens} new "
                                 f"tokens need --max-model-len {longest + max_new_tokens} or more",
                                 param_hint="--max-model-len")
    lora = adapter or compare
    rank = json.loads((lora / "adapter_config.json").read_text())["r"] if lora else 16
    cfg = server_config(model, max_model_len=max_model_len, max_new_tokens=max_new_tokens,
                        rank=rank, concurrency=concurrency, samples=samples, port=_free_port())
    device = detect_device()
    reported = cuda_total_bytes() if device == "cuda" and gpu_gb is None else None
    card_bytes, card_name = ((reported, f"card of {reported / 2**30:.2f} GiB (CUDA)")
                             if reported else card_of(cfg, gpu_gb))
    wanted = cfg.generator.max_num_seqs
    cfg, plan, refused = server_plan(cfg, model_path, cuda=device == "cuda",
                                     card_bytes=card_bytes, card_name=card_name)
    if refused:
        typer.echo(f"error: {refused}", err=True)
        raise typer.Exit(2)
    if cfg.generator.max_num_seqs < wanted:
        typer.echo(f"note: vLLM holds {cfg.generator.max_num_seqs} of the {wanted} sequences in "
                   f"flight (--concurrency x --samples) at --max-model-len {max_model_len} on a "
                   f"{plan.card_name}; it queues the rest", err=True)
    t0 = time.perf_counter()
    server = launch(cfg, model_path=model_path, device=device, plan=plan,
                    log_path=Path(tempfile.mkdtemp(prefix="mathrl-eval-")) / "generator.log")
    models = []
    try:
        with GeneratorClient(server.url, max_parallel=concurrency,
                             timeout_s=request_timeout) as client, \
                GraderPool() as pool:
            served = []  # (label, served name, adapter path)
            if adapter is None:
                served.append(("base", model_path, None))
            if lora is not None:
                client.load_adapter("eval-adapter", str(lora.resolve()))
                served.append(("adapter", "eval-adapter", str(lora)))
            for label, name, path in served:
                results = [run_benchmark(client, pool, name, t) for t in tasks]
                for t, r in zip(tasks, results, strict=True):  # the prompt as the model read it
                    for item, ids in zip(r["items"], t.prompts, strict=True):
                        item["prompt"] = tok.decode(ids)
                models.append({"label": label, "served": name, "adapter": path,
                               "benchmarks": results})
    finally:
        server.stop()
    report = {
        "config": {"model": model, "adapter": str(adapter) if adapter else None,
                   "compare": str(compare) if compare else None,
                   "datasets": [n for n, _ in datasets],
                   "sources": {n: p for n, p in datasets}, "limit": limit, "samples": samples,
                   "temperature": temperature, "prompt": prompt, "instruction": ins,
                   "protocol": protocol,
                   "max_new_tokens": max_new_tokens, "seconds": time.perf_counter() - t0},
        "models": models,
        "summary": {m["label"]: {b["name"]: b["summary"] for b in m["benchmarks"]}
                    for m in models},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    first = models[0]["benchmarks"][0]["summary"]
    line = {"model": model, "adapter": str(adapter) if adapter else None, "dataset": dataset,
            "n": int(first["n"]), "accuracy": first["greedy"],
            "accuracy_se": first["greedy_se"], "accuracy_lenient": first.get("greedy_lenient"),
            "accuracy_lenient_se": first.get("greedy_lenient_se"), "format": first["boxed"],
            "protocol": protocol,
            "summary": report["summary"], "report": str(out)}
    typer.echo(json.dumps(line) if json_out else f"{table(report)}\nreport: {out}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
