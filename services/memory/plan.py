"""The memory plan of a run on one card: vLLM and the LoRA learner side by side, in bytes.

Pure functions of the model's shape and the run config. Each component is a formula whose
terms are named below; constants that cannot be derived from shapes (CUDA contexts, graph
pools) are stated once with where they come from. `docs/memory.md` walks through the formulas
and `benchmarks/memory.py` measures the learner against them.

What the GPU holds while a run trains (both processes stay resident; vLLM's memory is fixed at
start, when it allocates its KV cache):

    generator = context + weights + lora slots + profiling peak + penalty state
                + CUDA graphs + KV cache
    learner   = context + weights + LoRA (params + grads) + optimizer state
                + activations of one micro-batch + the log-prob working set
    total     = generator + learner + reserved (other programs) + margin

With `generator.sleep_mode` vLLM releases its weights and KV cache while the learner steps,
so the peak is the larger of (generator + learner at rest) and (generator asleep + learner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.config import RunConfig
from services.dtypes import resolve_dtype
from services.memory.shape import DTYPE_BYTES, ModelShape

GiB = 1 << 30
MiB = 1 << 20

# CUDA context + cuBLAS workspace + loaded kernels, outside `torch.cuda.memory_allocated`.
# Measured on an H200 (CUDA 13, torch 2.11): 0.67 GiB for bare torch after one bf16 matmul,
# 0.78-0.94 GiB for the learner with bitsandbytes and peft loaded (benchmarks/results/). A
# consumer card's context is usually smaller, so this errs on the safe side.
LEARNER_CONTEXT = 900 * MiB
# vLLM's process holds more outside torch's allocator (attention kernels, NCCL, sampler
# workspaces: vLLM's "non-torch memory", typically 0.1-0.3 GiB on one GPU). Not measured here
# (no vLLM on the GPU machine): the learner's context plus that.
GENERATOR_CONTEXT = 1100 * MiB
# CUDA-graph pool: a few MiB per captured graph on top of the largest size's activations. An
# estimate (no vLLM on a GPU here to measure it); `graph_captures` counts the graphs.
GRAPH_PER_CAPTURE = 6 * MiB
GRAPH_BASE = 64 * MiB
GRAPH_CEILING = 512
"""vLLM 0.32's default largest capture size off data-center Blackwell (1024 there), before
`max_num_batched_tokens` caps it (`VllmConfig._set_cudagraph_sizes`)."""
KV_BLOCK = 16
"""vLLM's KV block size in tokens: every sequence's last block is its own."""
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
"""4-bit NF4 with double quantization: 4 bits a weight, an 8-bit absmax per 64 weights, and an
fp32 scale per 256 absmax blocks."""
ADAM8_BYTES = 2 + 2 * 4 / 2048
"""bitsandbytes 8-bit AdamW: two uint8 states a parameter, plus fp32 quantization statistics
per 2048-value block of each state."""
SAMPLER_COPIES = 3
"""fp32 `[sequences, vocab]` tensors alive in vLLM's sampler (logits, probabilities, log-probs)."""
PENALTY_BYTES = 4
"""vLLM 0.32's V2 sampler keeps, for every request slot, int32 counts of each vocabulary
token's output occurrences (`[max_num_seqs, vocab]`) and an int32 bit mask of its prompt's
tokens (`[max_num_seqs, vocab / 32]`), allocated at start whether or not a request asks for a
penalty (`v1/worker/gpu/sample/penalties.py`, `PenaltiesState.__init__`)."""

# What CUDA reports as the total of a card sold as N GB (`torch.cuda.get_device_properties(0)
# .total_memory`, what vLLM's `--gpu-memory-utilization` is a share of): less than N GiB, the
# driver keeps the rest. Figures from torch's out-of-memory message, "GPU 0 has a total
# capacity of X GiB", in public reports (two decimals, so each entry is X - 0.005 GiB, rounded
# down to a MiB): 8 GB: the lowest of 7.52-7.93 GiB (7.63 twice); 12 GB: 11.76 GiB (an RTX 3060
# 12 GB; issue 16's review quotes ~11.76 GiB for an RTX 3080 Ti); 16 GB: the lowest of
# 15.46-15.92 GiB. Not measured here. A card's exact figure goes in `gpu.memory_bytes`.
REPORTED_MIB = {8.0: 7695, 12.0: 12037, 16.0: 15825}
UNLISTED_SHARE = 0.939
"""A size the table lacks: the lowest reported/nominal ratio in it (8 GB: 7695 / 8192)."""


@dataclass
class Side:
    components: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.components.values())

    def as_json(self) -> dict:
        return {"components": dict(self.components), "total": self.total}


@dataclass
class MemoryPlan:
    card_bytes: int
    """The card's total as CUDA reports it (`card`)."""
    generator: Side
    learner: Side
    other: Side
    total: int
    generator_asleep: int | None = None
    """Generator bytes while asleep (`sleep_mode`), else None."""
    at_floor: tuple[str, ...] = ()
    """Components whose setting is already at its smallest (e.g. the learner's weights when
    `load_in_4bit` is on): no use advising it."""
    advice: dict[str, str] = field(default_factory=dict)
    """Setting to change per component where it depends on the config (over `ADVICE`)."""
    card_name: str = ""
    """The card as the user named it (e.g. `12 GB`), for messages."""

    @property
    def fits(self) -> bool:
        return self.total <= self.card_bytes

    def largest(self) -> tuple[str, int]:
        """`side.component` with the most bytes (generator or learner)."""
        items = [(f"generator.{k}", v) for k, v in self.generator.components.items()]
        items += [(f"learner.{k}", v) for k, v in self.learner.components.items()]
        return max(items, key=lambda kv: kv[1])

    def as_json(self) -> dict:
        out = {
            "card_bytes": self.card_bytes, "fits": self.fits,
            "generator": self.generator.as_json(), "learner": self.learner.as_json(),
            "other": self.other.as_json(), "total": self.total,
            "largest": self.largest()[0],
        }
        if self.generator_asleep is not None:
            out["generator_asleep"] = self.generator_asleep
        return out


def _dtype_bytes(name: str, cuda: bool = True) -> int:
    return DTYPE_BYTES[resolve_dtype(name, "cuda" if cuda else "cpu")]


def _ceil_block(tokens: int) -> int:
    return math.ceil(tokens / KV_BLOCK) * KV_BLOCK


# ------------------------------------------------------------------------------ generator
def max_num_seqs(cfg: RunConfig) -> int:
    """The most sequences one step has in flight: prompts x G."""
    return cfg.generator.max_num_seqs or cfg.rollout.prompts_per_step * cfg.rollout.group_size


def step_kv_tokens(cfg: RunConfig) -> int:
    """KV tokens for a whole step at once. A prompt may use every token that
    `max_model_len - max_new_tokens` leaves; with prefix caching a group shares its prompt's
    full blocks, and each of the G completions owns its blocks (the last one partly filled)."""
    ro = cfg.rollout
    prompt = cfg.model.max_model_len - ro.max_new_tokens
    if cfg.generator.enable_prefix_caching:
        own = _ceil_block(ro.max_new_tokens) + KV_BLOCK
        per_prompt = _ceil_block(prompt) + ro.group_size * own
    else:
        per_prompt = ro.group_size * _ceil_block(cfg.model.max_model_len)
    # vLLM refuses to start unless one longest request fits.
    return max(ro.prompts_per_step * per_prompt, _ceil_block(cfg.model.max_model_len))


def kv_cache_bytes(shape: ModelShape, cfg: RunConfig, *, cuda: bool = True) -> int:
    return step_kv_tokens(cfg) * shape.kv_bytes_per_token(_dtype_bytes(cfg.model.dtype, cuda))


def _forward_token_bytes(shape: ModelShape, dtype_bytes: int) -> int:
    """Transient bytes per token of one inference layer: residual + normed input, q/k/v,
    attention output, gate/up (fused) and the activated product."""
    h, i = shape.hidden, shape.intermediate
    return dtype_bytes * (3 * h + shape.q_dim + 2 * shape.kv_dim + 3 * i)


def graph_sizes(n_seqs: int, batched_tokens: int) -> list[int]:
    """Token counts vLLM 0.32 captures by default (`VllmConfig._set_cudagraph_sizes`): 1, 2, 4,
    then steps of 8 (of 16 from 256) up to min(2 x max_num_seqs, 512, max_num_batched_tokens),
    plus max_num_batched_tokens and max_num_seqs where they fit under that."""
    top = min(2 * n_seqs, GRAPH_CEILING)
    decode = [n_seqs] if n_seqs <= top else []
    top = min(top, batched_tokens)
    sizes = {s for s in (1, 2, 4) if s <= top} | set(range(8, min(top + 1, 256), 8))
    sizes |= set(range(256, top + 1, 16))
    if batched_tokens <= top:
        sizes.add(batched_tokens)
    return sorted(sizes | {s for s in decode if s <= batched_tokens})


def graph_captures(cfg: RunConfig) -> int:
    """CUDA graphs vLLM 0.32 captures with its defaults (model runner V2, FULL_AND_PIECEWISE;
    `v1/worker/gpu/cudagraph_utils.py`, `CudaGraphManager._init_candidates`): a piecewise graph
    per size for mixed batches and a full graph per size up to max_num_seqs for decode, each
    once per LoRA case. With LoRA the cases are no adapter and `max_loras + 1` adapters
    (`v1/worker/gpu/lora_utils.py`, `get_lora_capture_cases`), whatever
    `cudagraph_specialize_lora` says: only V1's dispatcher drops the no-adapter set."""
    n_seqs = max_num_seqs(cfg)
    sizes = graph_sizes(n_seqs, cfg.generator.max_num_batched_tokens)
    decode = [s for s in sizes if s <= n_seqs]
    lora_cases = 2 if cfg.generator.sync_mode == "lora" else 1
    return lora_cases * (len(sizes) + len(decode))


def penalty_bytes(shape: ModelShape, n_seqs: int) -> int:
    """The V2 sampler's penalty state (`PENALTY_BYTES`): output counts and prompt bit mask."""
    return n_seqs * (shape.vocab + math.ceil(shape.vocab / 32)) * PENALTY_BYTES


def lora_slot_bytes(shape: ModelShape, cfg: RunConfig, dtype_bytes: int) -> int:
    """vLLM wraps every linear layer it supports (for Qwen2/Llama: qkv, o, gate_up, down;
    `LoRAModelManager._create_lora_modules` with no `--lora-target-modules`), whatever an
    adapter targets, and gives each `max_loras` slots of A and B at `max_lora_rank` in the model
    dtype (`BaseLinearLayerWithLoRA.create_lora_weights`)."""
    rank = max(cfg.generator.max_lora_rank, cfg.lora.rank)
    return cfg.generator.max_loras * shape.lora_params(rank, list(shape.linear_dims())) \
        * dtype_bytes


def serve_kv_tokens(cfg: RunConfig) -> int:
    """KV tokens for max_num_seqs sequences of max_model_len each: a server whose requests
    share no prompt (`mathrl eval`: one request per problem and sample)."""
    return max_num_seqs(cfg) * _ceil_block(cfg.model.max_model_len)


def generator_side(shape: ModelShape, cfg: RunConfig, *, cuda: bool = True,
                   kv_tokens: int | None = None) -> Side:
    """vLLM's share; `kv_tokens`: the KV cache's size in tokens (default: one GRPO step's)."""
    gen, db = cfg.generator, _dtype_bytes(cfg.model.dtype, cuda)
    n_seqs = max_num_seqs(cfg)
    fwd = _forward_token_bytes(shape, db)
    c: dict[str, int] = {"context": GENERATOR_CONTEXT if cuda else 0,
                         "weights": shape.n_params * db}
    if gen.sync_mode == "lora":
        c["lora"] = lora_slot_bytes(shape, cfg, db)
    # The profiling run: one engine step of max_num_batched_tokens through the model, then a
    # dummy sampler batch of max_num_seqs rows over the whole vocabulary in fp32.
    c["activations"] = (gen.max_num_batched_tokens * fwd
                        + SAMPLER_COPIES * n_seqs * shape.vocab * 4)
    if cuda:  # the card's plan; on a CPU only the KV cache is taken from this side
        c["penalties"] = penalty_bytes(shape, n_seqs)
    if not gen.enforce_eager and cuda:
        top = max(graph_sizes(n_seqs, gen.max_num_batched_tokens))
        c["cuda_graphs"] = GRAPH_BASE + graph_captures(cfg) * GRAPH_PER_CAPTURE + top * fwd
    tokens = step_kv_tokens(cfg) if kv_tokens is None else kv_tokens
    c["kv_cache"] = tokens * shape.kv_bytes_per_token(db)
    return Side(c)


# ------------------------------------------------------------------------------ learner
def micro_batch_tokens(cfg: RunConfig) -> tuple[int, int]:
    """(sequence tokens, completion tokens) of one micro-batch at the longest lengths. With a
    token budget, a micro-batch holds at most that many padded tokens (or one longest
    sequence), and short rows can make nearly all of them completion tokens."""
    budget = cfg.learner.micro_batch_tokens
    if budget is not None:
        return max(budget, cfg.model.max_model_len), max(budget, cfg.rollout.max_new_tokens)
    mb = cfg.learner.micro_batch_size
    return mb * cfg.model.max_model_len, mb * cfg.rollout.max_new_tokens


def _train_token_bytes(shape: ModelShape, ab: int) -> int:
    """Bytes autograd saves per token of one decoder layer: the inputs of each norm, linear
    and activation (q/k/v/o, gate/up/down, SiLU, product) at the activation dtype, and the fp32
    copies RMSNorm makes of its input."""
    h, i = shape.hidden, shape.intermediate
    return ab * (6 * h + 2 * shape.q_dim + 2 * shape.kv_dim + 4 * i) + 2 * 4 * h


def pass_setting(cfg: RunConfig) -> str:
    """The setting that sizes a learner pass: its token budget when set, else its count."""
    if cfg.learner.micro_batch_tokens is not None:
        return "learner.micro_batch_tokens"
    return "learner.micro_batch_size"


def row_width(cfg: RunConfig) -> int:
    """The widest row a micro-batch can hold: one sequence per-sequence; with the shared
    prompt, one group's prompt and its G completions back to back (within the micro-batch)."""
    if not cfg.learner.shared_prompt:
        return cfg.model.max_model_len
    group = cfg.model.max_model_len + (cfg.rollout.group_size - 1) * cfg.rollout.max_new_tokens
    return min(micro_batch_tokens(cfg)[0], group)


def attention_bytes(shape: ModelShape, cfg: RunConfig, *, cuda: bool = True) -> int:
    """What attention holds beyond the linear layers' activations, for one layer at a time.
    Rows of width W fill at most `tokens` positions, so rows x W^2 <= tokens x W. The `[rows,
    1, W, W]` mask is boolean; on CUDA, SDPA makes an additive copy at the activation dtype and
    pads it to 16 columns for its fused kernels (cuDNN's ran the learner on an H200, the
    memory-efficient one runs it too: tests/test_shared_prompt.py), which hold O(W) per head,
    no scores. The CPU's math kernel holds the fp32 scores and their softmax of every head.
    The H200 learner stayed at 0.93-0.95 of the plan with this term (docs/benchmarks.md)."""
    ab = _dtype_bytes(cfg.model.dtype, cuda)
    tokens, _ = micro_batch_tokens(cfg)
    area = tokens * row_width(cfg)
    if cuda:
        return area * (1 + 2 * ab)
    return area * (1 + ab + shape.heads * 4 * 2)


def activation_bytes(shape: ModelShape, cfg: RunConfig, *, cuda: bool = True) -> int:
    ab = _dtype_bytes(cfg.model.dtype, cuda)
    tokens, _ = micro_batch_tokens(cfg)
    layer = tokens * _train_token_bytes(shape, ab)
    attn = attention_bytes(shape, cfg, cuda=cuda)
    if cfg.learner.gradient_checkpointing:
        # Every layer keeps its input; backward recomputes one layer at a time.
        return shape.layers * tokens * shape.hidden * ab + layer + attn
    return shape.layers * (layer + attn)


def logprob_bytes(shape: ModelShape, cfg: RunConfig, *, cuda: bool = True,
                  chunk_tokens: int | None = None) -> int:
    """Working set of turning hidden states into completion log-probs (forward + backward)."""
    ab = _dtype_bytes(cfg.model.dtype, cuda)
    tokens, completion = micro_batch_tokens(cfg)
    chunk = cfg.learner.logprob_chunk_tokens if chunk_tokens is None else chunk_tokens
    if chunk == 0:
        # Full logits [B, L, V] at the model dtype, then over the completion span an fp32
        # temperature-scaled copy and the log-softmax; backward holds one gradient of each at a
        # time, so about two fp32 copies are alive at the peak (measured on an H200: 0.76 GiB
        # a 1,024-token sequence, benchmarks/results/memory-cuda-h200-cap.json).
        return tokens * shape.vocab * ab + (completion + cfg.learner.micro_batch_size) \
            * shape.vocab * 4 * 2
    rows = min(chunk, completion)
    # Completion hidden states gathered (and their gradient), one chunk's logits at the
    # model dtype, its fp32 scaled copy, softmax for logsumexp's backward, and their gradient.
    return 2 * completion * shape.hidden * ab + rows * shape.vocab * (ab + 3 * 4)


def learner_side(shape: ModelShape, cfg: RunConfig, *, cuda: bool = True) -> Side:
    lc = cfg.learner
    ab = _dtype_bytes(cfg.model.dtype, cuda)
    unquantized = shape.embedding_params + shape.small_params
    if lc.load_in_4bit:
        weights = math.ceil(shape.linear_params * NF4_BYTES) + unquantized * ab
    else:
        weights = shape.n_params * ab
    n_lora = shape.lora_params(cfg.lora.rank, cfg.lora.target_modules)
    opt = 8 if lc.optimizer == "adamw" else ADAM8_BYTES
    return Side({
        "context": LEARNER_CONTEXT if cuda else 0,
        "weights": weights,
        "lora": n_lora * (4 + 4),  # fp32 adapter weights and their gradients
        "optimizer": math.ceil(n_lora * opt),
        "activations": activation_bytes(shape, cfg, cuda=cuda),
        "logprobs": logprob_bytes(shape, cfg, cuda=cuda),
    })


def learner_at_rest(side: Side) -> int:
    """What the learner keeps between steps (it empties torch's cache after each step)."""
    c = side.components
    return c["context"] + c["weights"] + c["lora"] + c["optimizer"]


# ------------------------------------------------------------------------------ the plan
def reported_bytes(nominal_gb: float) -> int:
    """What CUDA reports as the total of a card sold as `nominal_gb` GB (`REPORTED_MIB`)."""
    mib = REPORTED_MIB.get(float(nominal_gb))
    return mib * MiB if mib is not None else int(nominal_gb * GiB * UNLISTED_SHARE)


def card_of(cfg: RunConfig, gpu_gb: float | None = None) -> tuple[int, str]:
    """(bytes the plan may fill, how to name the card): `gpu_gb` (a nominal size) over
    `gpu.memory_bytes` (an exact figure) over `gpu.memory_gb` (a nominal size), else 12 GB."""
    if gpu_gb is None and cfg.gpu.memory_bytes is not None:
        return cfg.gpu.memory_bytes, f"{cfg.gpu.memory_bytes / GiB:.2f} GiB card"
    nominal = gpu_gb or cfg.gpu.memory_gb or 12.0
    total = reported_bytes(nominal)
    return total, f"{nominal:g} GB card ({total / GiB:.2f} GiB reported)"


def _other(cfg: RunConfig) -> Side:
    return Side({"reserved": int(cfg.gpu.reserved_gb * GiB),
                 "margin": int(cfg.gpu.margin_gb * GiB)})


def plan_serving(shape: ModelShape, cfg: RunConfig, *, card_bytes: int, cuda: bool = True,
                 card_name: str = "") -> MemoryPlan:
    """vLLM alone on the card (`mathrl eval`): the generator with `serve_kv_tokens`, no learner."""
    gen = generator_side(shape, cfg, cuda=cuda, kv_tokens=serve_kv_tokens(cfg))
    other = _other(cfg)
    return MemoryPlan(card_bytes=card_bytes, generator=gen, learner=Side({}), other=other,
                      total=gen.total + other.total,
                      card_name=card_name or f"{card_bytes / GiB:.2f} GiB card")


def plan_run(shape: ModelShape, cfg: RunConfig, *, gpu_gb: float | None = None,
             served: RunConfig | None = None) -> MemoryPlan:
    """`served`: the config the running generator was started from (a service's stack): its
    generator side and card are planned instead of the run's own, since that is the vLLM the
    run's learner will share the card with."""
    stack = served or cfg
    gen = generator_side(shape, stack)
    learner = learner_side(shape, cfg)
    other = _other(stack)
    asleep = None
    if stack.generator.sleep_mode:
        g = gen.components
        asleep = g["context"] + g.get("cuda_graphs", 0) + g.get("lora", 0)
        busy = max(gen.total + learner_at_rest(learner), asleep + learner.total)
    else:
        busy = gen.total + learner.total
    floor = [name for name, done in (
        ("learner.weights", cfg.learner.load_in_4bit),
        ("learner.optimizer", cfg.learner.optimizer != "adamw"),
        ("learner.activations", micro_batch_tokens(cfg)[0] <= cfg.model.max_model_len),
        ("learner.lora", cfg.lora.rank == 1),
        ("generator.lora", stack.generator.max_loras == 1),
    ) if done]
    card_bytes, card_name = card_of(stack, gpu_gb)
    return MemoryPlan(card_bytes=card_bytes, generator=gen, card_name=card_name,
                      learner=learner, other=other, total=busy + other.total,
                      advice={"learner.activations": pass_setting(cfg)},
                      generator_asleep=asleep, at_floor=tuple(floor))


# What to change to shrink a component. Contexts and the generator's bf16 weights have no
# knob of their own: the message then names the largest component that does.
ADVICE = {
    "generator.kv_cache": "rollout.prompts_per_step",
    "generator.activations": "generator.max_num_batched_tokens",
    "generator.lora": "generator.max_loras",
    "generator.cuda_graphs": "generator.enforce_eager",
    "learner.weights": "learner.load_in_4bit",
    "learner.activations": "learner.micro_batch_size",
    "learner.logprobs": "learner.logprob_chunk_tokens",
    "learner.optimizer": "learner.optimizer",
    "learner.lora": "lora.rank",
}


def refusal(plan: MemoryPlan) -> tuple[str, str] | None:
    """None when the plan fits; else (setting to change, message naming the largest component
    and the largest one a setting can shrink)."""
    if plan.fits:
        return None
    name, size = plan.largest()
    sides = {"generator": plan.generator.components, "learner": plan.learner.components}
    tunable = [(f"{s}.{k}", v) for s, comps in sides.items() for k, v in comps.items()
               if f"{s}.{k}" in ADVICE and f"{s}.{k}" not in plan.at_floor]
    knob, knob_size = max(tunable, key=lambda kv: kv[1])
    setting = plan.advice.get(knob, ADVICE[knob])
    over = (plan.total - plan.card_bytes) / GiB
    return setting, (
        f"the memory plan needs {plan.total / GiB:.2f} GiB on a {plan.card_name} "
        f"({over:.2f} GiB over); the largest component is {name} ({size / GiB:.2f} GiB), "
        f"the largest one a setting shrinks is {knob} ({knob_size / GiB:.2f} GiB): change "
        f"{setting} (see `mathrl plan`)"
    )
