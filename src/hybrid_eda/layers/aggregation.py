"""Weighted sums over the incoming edges of a graph, ``out[i] = sum_{e: j -> i} w_e x[j]``.

The emulator smooths every channel of every point with kernels learned from edge geometry, so ``x`` is wide
(``[grid, batch * channels * latent]``: 35,718 x 822 x 16 at N80 x 137 levels). Gathering ``x[src]`` per edge
(``[edges, width]``, as message-passing libraries do) would cost 9-16 times the token memory per round; here the
forward pass is one sparse-dense product and the backward pass computes

    dL/dx = A^T dL/dout,        dL/dw_e = <dL/dout[dst_e], x[src_e]>

with the edge products taken in chunks, so memory stays at a few token tensors.
"""

from __future__ import annotations

import warnings

import torch


def _csr_pattern(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> tuple[torch.Tensor, ...]:
    """CSR structure of the pattern ``(rows, cols)``: ``crow, col`` and, per edge, its slot (duplicates share one)."""
    keys, slot = torch.unique(rows * n_cols + cols, sorted=True, return_inverse=True)
    counts = torch.bincount(torch.div(keys, n_cols, rounding_mode="floor"), minlength=n_rows)
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=keys.device)
    crow[1:] = torch.cumsum(counts, 0)
    return crow, keys % n_cols, slot


def _csr(weight: torch.Tensor, pattern: tuple[torch.Tensor, ...], shape: tuple[int, int]) -> torch.Tensor:
    crow, col, slot = pattern
    values = torch.zeros(col.numel(), dtype=weight.dtype, device=weight.device).index_add(0, slot, weight)
    return _sparse_csr(crow, col, values, shape)


def _sparse_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state", once per call otherwise
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape)


class _EdgeWeightedSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, src, dst, n_dst):  # noqa: ANN001, ANN205
        n_src = x.shape[0]
        pattern = _csr_pattern(dst, src, n_dst, n_src)
        ctx.save_for_backward(x, weight, src, dst)
        ctx.pattern, ctx.n_dst = pattern, n_dst
        return torch.sparse.mm(_csr(weight.detach(), pattern, (n_dst, n_src)), x)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        x, weight, src, dst = ctx.saved_tensors
        n_src, grad_out = x.shape[0], grad_out.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            transposed = _csr_pattern(src, dst, n_src, ctx.n_dst)
            grad_x = torch.sparse.mm(_csr(weight.detach(), transposed, (n_src, ctx.n_dst)), grad_out)
        if ctx.needs_input_grad[1]:
            # dL/dw_e = <grad_out[dst_e], x[src_e]>: a sampled dense-dense product on the edge pattern, without
            # gathering [edges, width] tensors.
            crow, col, slot = ctx.pattern
            ones = torch.ones(col.numel(), dtype=x.dtype, device=x.device)
            pattern = _sparse_csr(crow, col, ones, (ctx.n_dst, n_src))
            sampled = torch.sparse.sampled_addmm(pattern, grad_out, x.t(), beta=0.0)
            grad_w = sampled.values()[slot]
        return grad_x, grad_w, None, None, None


def edge_weighted_sum(
    x: torch.Tensor, weight: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, n_dst: int
) -> torch.Tensor:
    """``out[i, :] = sum_{e: dst_e = i} weight[e] x[src_e, :]``.

    Parameters
    ----------
    x : torch.Tensor
        Source node features ``[n_src, width]``.
    weight : torch.Tensor
        Edge weights ``[edges]``.
    src, dst : torch.Tensor
        Source and target node index of each edge ``[edges]`` (long).
    n_dst : int
        Number of target nodes.

    Returns
    -------
    torch.Tensor
        ``[n_dst, width]``.
    """
    if x.ndim != 2 or weight.ndim != 1 or src.shape != weight.shape or dst.shape != weight.shape:
        msg = (
            f"edge_weighted_sum expects x[n_src, width] and weight/src/dst[edges], got x {tuple(x.shape)}, weight "
            f"{tuple(weight.shape)}, src {tuple(src.shape)}, dst {tuple(dst.shape)}"
        )
        raise ValueError(msg)
    return _EdgeWeightedSum.apply(x, weight.to(x.dtype), src, dst, n_dst)


def edge_softmax(logits: torch.Tensor, dst: torch.Tensor, n_dst: int) -> torch.Tensor:
    """Softmax of ``logits[edges, heads]`` over the incoming edges of each target node (weights sum to 1)."""
    index = dst.unsqueeze(-1).expand_as(logits)
    peak = torch.full((n_dst, logits.shape[-1]), -torch.inf, dtype=logits.dtype, device=logits.device)
    peak = peak.scatter_reduce(0, index, logits.detach(), reduce="amax", include_self=True)
    weights = torch.exp(logits - peak[dst])
    total = torch.zeros((n_dst, logits.shape[-1]), dtype=logits.dtype, device=logits.device).index_add(0, dst, weights)
    return weights / total[dst]
