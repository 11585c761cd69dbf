"""The contrastive loss: InfoNCE with a false-negative mask, and the all_gather that keeps its gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(q: torch.Tensor, d: torch.Tensor, pos: torch.Tensor, temperature: float,
             exclude: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE over cosine similarities: mean over queries of CE(softmax(cos(q, d) / temperature), pos).

    q (n_q, dim) queries; d (n_d, dim) candidate docs (positives and negatives of every rank); pos (n_q,) the
    column of each query's positive; exclude (n_q, n_d) True = drop the column for that query (another
    positive of the same query, or the same text as it: not a negative).
    """
    logits = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T / temperature  # (n_q, n_d)
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, pos)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward gives each rank the SUM over ranks of the gradient of its slice.

    Every rank's loss depends on every rank's docs, so this (not "gather, then put the local tensor back",
    which drops the other ranks' terms) makes the DDP-averaged gradient exactly that of the mean loss over
    the global batch. (torch.distributed.nn.functional.all_gather does the same but is deprecated.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]
