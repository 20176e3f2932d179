"""Log-probs of G completions that share one prompt, with the prompt computed once per group.

A GRPO group is one prompt and G sampled completions. The per-sequence pass runs the prompt G
times (forward and backward). Here a group becomes one row, `prompt + c_1 + ... + c_G`, and a
custom attention mask lets every completion see the prompt and itself only (causally), never
its siblings; position ids restart at the prompt's length for each completion. So the prompt's
keys and values are computed once and shared by the G completions in forward and backward, and
the completions carry no padding against each other. This is Prefix Grouper's layout (arXiv
2506.05433, which splits attention into prefix self-attention and suffix-to-prefix attention);
a block mask gives the same attention through the decoder's own attention code, so every
architecture that takes a 4-D mask works unchanged, and HF gradient checkpointing still works
(one ordinary forward, no KV cache).

Rows of several groups are right-padded to the longest; a pad position attends to itself
only (a fully masked row would give NaN). Values and LoRA gradients equal the per-sequence
pass within fp32 rounding (tests/test_shared_prompt.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from services.learner.logprobs import split_model, token_logprobs
from services.learner.packing import padded_width


def _layout(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[Sequence[int]]],
            pad_id: int, width_multiple: int = 1):
    """Token ids, positions, segment ids (0 prompt, k completion k, -1 padding), and for every
    completion token its (row, predictor column, target column, output row, output column)."""
    rows_ids, rows_pos, rows_seg = [], [], []
    pred = {k: [] for k in ("row", "src", "dst", "out_row", "out_col")}
    out_row = 0
    for r, (p, group) in enumerate(zip(prompts, completions, strict=True)):
        ids, pos, seg = list(p), list(range(len(p))), [0] * len(p)
        for k, c in enumerate(group, start=1):
            start = len(ids)
            ids += c
            pos += range(len(p), len(p) + len(c))
            seg += [k] * len(c)
            for j in range(len(c)):
                pred["row"].append(r)
                # Token 0 is predicted from the prompt's last position, token j from j - 1.
                pred["src"].append(len(p) - 1 if j == 0 else start + j - 1)
                pred["dst"].append(start + j)
                pred["out_row"].append(out_row)
                pred["out_col"].append(j)
            out_row += 1
        rows_ids.append(ids)
        rows_pos.append(pos)
        rows_seg.append(seg)
    width = padded_width(max(len(x) for x in rows_ids), width_multiple)
    pad = lambda rows, v: [x + [v] * (width - len(x)) for x in rows]  # noqa: E731
    return pad(rows_ids, pad_id), pad(rows_pos, 0), pad(rows_seg, -1), pred


def block_mask(segments: torch.Tensor) -> torch.Tensor:
    """`[R, 1, L, L]` bool attention mask (True = attend) from segment ids `[R, L]`: causal,
    and a key is visible to a query when it is in the prompt (segment 0) or in the query's own
    segment; padding (-1) sees itself only."""
    L = segments.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=segments.device).tril()
    q, kv = segments.unsqueeze(2), segments.unsqueeze(1)
    visible = ((kv == 0) & (q >= 0)) | ((kv == q) & (q > 0))
    eye = torch.eye(L, dtype=torch.bool, device=segments.device)
    pad_self = (q < 0) & eye
    return ((visible & causal) | pad_self).unsqueeze(1)


def grouped_logprobs(model, prompts: Sequence[Sequence[int]],
                     completions: Sequence[Sequence[Sequence[int]]], *, pad_id: int,
                     temperature: float, chunk: int = 128, width_multiple: int = 1
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of `completions[g][k]` (completion k of group g, prompt `prompts[g]`), rows in
    group order: `(logprobs [B, T], mask [B, T])`, B = all completions, T = the longest, fp32,
    logits divided by `temperature`. Every prompt and completion needs at least one token.
    `width_multiple`: rows are padded to a multiple of it, so that the decoder sees a few
    shapes only (see `Learner`)."""
    if len(prompts) != len(completions):
        raise ValueError("one completion list per prompt")
    if any(len(p) == 0 for p in prompts) or any(len(c) == 0 for g in completions for c in g):
        raise ValueError("prompts and completions must be non-empty")
    decoder, head = split_model(model)
    device = next(model.parameters()).device
    ids, pos, seg, pred = _layout(prompts, completions, pad_id, width_multiple)
    as_t = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    ids, pos, seg = as_t(ids), as_t(pos), as_t(seg)
    mask4d = block_mask(seg)
    if getattr(decoder.config, "_attn_implementation", "sdpa") == "eager":
        # Eager attention adds the mask to its scores: it wants 0 / -inf, not booleans.
        mask4d = torch.zeros(mask4d.shape, device=device).masked_fill(~mask4d, float("-inf"))
    hidden = decoder(input_ids=ids, attention_mask=mask4d, position_ids=pos).last_hidden_state
    row, src, dst = as_t(pred["row"]), as_t(pred["src"]), as_t(pred["dst"])
    lp = token_logprobs(hidden[row, src], ids[row, dst], head, temperature=temperature,
                        chunk=chunk)
    B = sum(len(g) for g in completions)
    T = max(len(c) for g in completions for c in g)
    out_row, out_col = as_t(pred["out_row"]), as_t(pred["out_col"])
    logps = lp.new_zeros(B, T).index_put((out_row, out_col), lp)
    mask = torch.zeros(B, T, dtype=torch.bool, device=device)
    mask[out_row, out_col] = True
    return logps, mask
