"""Token log-probs of sampled completions under the policy, without the full logits.

The naive way runs the LM head over every position, `[B, L, vocab]`, then an fp32 copy, the
log-softmax and their gradients: ~3 x B x L x 151,936 x 4 bytes for Qwen2.5, 1.9 GB at
micro-batch 2 x 712 tokens and growing with the micro-batch. Here the decoder's hidden states
are gathered at the completion positions only, and the LM head + logsumexp + gather run over
`chunk` rows at a time under activation checkpointing: backward recomputes one chunk's logits
instead of keeping every chunk's, so the working set is one chunk's logits whatever the
micro-batch. Values and gradients equal the naive computation (tests/test_logprobs.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def split_model(model):
    """(decoder, lm_head) of a causal LM, a peft wrapper around one included. LoRA layers
    are injected in place, so calling the inner decoder still applies (or, inside
    `disable_adapter()`, skips) the adapter."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, base.base_model_prefix), base.get_output_embeddings()


def completion_positions(prompt_lens: list[int], total_lens: list[int], device
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, position, column) of every completion token: token `t` of sequence `b` sits at
    `prompt_len + t` and is predicted from the hidden state at `prompt_len + t - 1`."""
    rows, pos, cols = [], [], []
    for b, (p, t) in enumerate(zip(prompt_lens, total_lens, strict=True)):
        n = t - p
        rows += [b] * n
        pos += range(p - 1, t - 1)
        cols += range(n)
    as_t = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    return as_t(rows), as_t(pos), as_t(cols)


def _chunk_logprobs(hidden: torch.Tensor, targets: torch.Tensor, head, temperature: float
                    ) -> torch.Tensor:
    logits = head(hidden).float() / temperature
    return logits.gather(1, targets.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=-1)


def token_logprobs(hidden: torch.Tensor, targets: torch.Tensor, head, *, temperature: float,
                   chunk: int) -> torch.Tensor:
    """log softmax(head(hidden) / temperature)[targets] for `hidden [N, H]`, `targets [N]`,
    `chunk` rows at a time (fp32 maths); returns `[N]`."""
    out = []
    for i in range(0, hidden.shape[0], chunk):
        h, t = hidden[i : i + chunk], targets[i : i + chunk]
        if torch.is_grad_enabled():
            out.append(checkpoint(_chunk_logprobs, h, t, head, temperature, use_reentrant=False))
        else:
            out.append(_chunk_logprobs(h, t, head, temperature))
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        prompt_lens: list[int], total_lens: list[int], *, temperature: float,
                        chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the completion tokens under `model`: `(logprobs [B, T], mask [B, T])`, T =
    the longest completion, fp32. Logits are divided by the sampling temperature so the learner
    scores the distribution vLLM sampled from. `chunk = 0` takes the naive full-logits path."""
    if chunk == 0:
        return completion_logprobs_naive(model, input_ids, attention_mask, prompt_lens,
                                         total_lens, temperature=temperature)
    decoder, head = split_model(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    rows, pos, cols = completion_positions(prompt_lens, total_lens, input_ids.device)
    flat = token_logprobs(hidden[rows, pos], input_ids[rows, pos + 1], head,
                          temperature=temperature, chunk=chunk)
    B, T = len(prompt_lens), max(t - p for p, t in zip(prompt_lens, total_lens, strict=True))
    out = flat.new_zeros(B, T).index_put((rows, cols), flat)
    mask = torch.zeros(B, T, dtype=torch.bool, device=input_ids.device)
    mask[rows, cols] = True
    return out, mask


def completion_logprobs_naive(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              prompt_lens: list[int], total_lens: list[int], *,
                              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: full logits from the prompt's first completion predictor on."""
    start = min(prompt_lens) - 1
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = logits[:, start:-1].float() / temperature  # predicts tokens start+1 .. L-1
    targets = input_ids[:, start + 1 :]
    logps = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    T = max(t - p for p, t in zip(prompt_lens, total_lens, strict=True))
    out = torch.zeros((len(prompt_lens), T), dtype=logps.dtype, device=logps.device)
    mask = torch.zeros((len(prompt_lens), T), dtype=torch.bool, device=logps.device)
    for i, (p, t) in enumerate(zip(prompt_lens, total_lens, strict=True)):
        n = t - p
        out[i, :n] = logps[i, p - start - 1 : p - start - 1 + n]
        mask[i, :n] = True
    return out, mask
