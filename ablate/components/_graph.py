"""The graph model's pieces: which feature column is which point (`PointLayout`, declared by the
feature set), the skeleton's normalised adjacency, and the spatial-temporal graph convolution.

Everything stays 3-D ([B, T, P * C], point-major: column p * C + c), because the exported graph
goes through onnx2tf, which re-lays-out 4-D tensors as images (see _layers): a per-point linear map
is a reshape to [B, T * P, C] (one dynamic dimension), and mixing neighbours is a weighted sum of
`index_select`s on the channel axis, one per neighbour slot (the skeleton has at most a few
neighbours per point).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ablate.components._layers import CausalDepthwiseConv, MaskedBatchNorm, activation, masked_mean, zero_padding
from ablate.data import landmarks as lm


@dataclass(frozen=True)
class PointLayout:
    """Where each point's values are in a feature set's per-frame vector."""

    rows: tuple[int, ...]  # the landmark row (0..542) of each point, in feature order
    channels: int  # values per point: coordinates x (1 + lags)
    columns: tuple[int, ...]  # the feature column of point p's channel c at p * channels + c
    extra: tuple[int, ...]  # the columns that are no point's (distances, angles)


def adjacency(rows: tuple[int, ...]) -> tuple[list[list[int]], list[list[float]]]:
    """Neighbours (self first) and weights of each point in the symmetrically normalised skeleton
    graph with self-loops, D^-1/2 (A + I) D^-1/2 (Kipf and Welling 2017), over the skeleton edges
    (landmarks.SKELETON) whose two ends are both among the points."""
    at = {r: i for i, r in enumerate(rows)}
    nbrs: list[list[int]] = [[i] for i in range(len(rows))]
    for a, b in lm.SKELETON:
        if a in at and b in at and at[b] not in nbrs[at[a]]:
            nbrs[at[a]].append(at[b])
            nbrs[at[b]].append(at[a])
    degree = [len(n) for n in nbrs]
    weights = [[(degree[i] * degree[j]) ** -0.5 for j in n] for i, n in enumerate(nbrs)]
    return nbrs, weights


class GraphMix(nn.Module):
    """Each point's channels replaced by the adjacency-weighted sum over its neighbours (itself
    included): a sum over neighbour slots of index_select on the channel axis."""

    def __init__(self, rows: tuple[int, ...], channels: int) -> None:
        super().__init__()
        nbrs, weights = adjacency(rows)
        slots = max(len(n) for n in nbrs)
        index, scale = [], []
        for k in range(slots):  # a point with fewer neighbours repeats itself with weight 0
            index.append([(n[k] if k < len(n) else i) * channels + c for i, n in enumerate(nbrs) for c in range(channels)])
            scale.append([w[k] if k < len(w) else 0.0 for w in weights for _ in range(channels)])
        self.register_buffer("index", torch.tensor(index, dtype=torch.int64), persistent=False)
        self.register_buffer("scale", torch.tensor(scale), persistent=False)
        self.edges = sum(len(n) - 1 for n in nbrs) // 2

    def forward(self, x: Tensor) -> Tensor:
        out = x.index_select(-1, self.index[0]) * self.scale[0].to(x.dtype)
        for k in range(1, self.index.shape[0]):
            out = out + x.index_select(-1, self.index[k]) * self.scale[k].to(x.dtype)
        return out


class PointLinear(nn.Module):
    """The same Linear(c_in -> c_out) on every point of [B, T, P * c_in] -> [B, T, P * c_out]."""

    def __init__(self, points: int, c_in: int, c_out: int) -> None:
        super().__init__()
        self.points, self.c_in, self.c_out = points, c_in, c_out
        self.linear = nn.Linear(c_in, c_out)

    def forward(self, x: Tensor) -> Tensor:
        b, t = x.shape[0], x.shape[1]
        return self.linear(x.reshape(b, -1, self.c_in)).reshape(b, t, self.points * self.c_out)


class GraphBlock(nn.Module):
    """Spatial-temporal graph convolution (Yan et al. 2018, ST-GCN), one partition: per-point
    linear map, neighbour mixing, masked BN, activation; then a causal depthwise convolution over
    time on every point's channels, masked BN, activation, dropout; a residual around it all (a
    per-point linear map where the channel count changes)."""

    def __init__(self, rows: tuple[int, ...], c_in: int, c_out: int, kernel: int, dropout: float, act: str) -> None:
        super().__init__()
        p = len(rows)
        self.spatial = PointLinear(p, c_in, c_out)
        self.mix = GraphMix(rows, c_out)
        self.norm1 = MaskedBatchNorm(p * c_out)
        self.act1 = activation(act)
        self.temporal = CausalDepthwiseConv(p * c_out, kernel)
        self.norm2 = MaskedBatchNorm(p * c_out)
        self.act2 = activation(act)
        self.drop = nn.Dropout(dropout)
        self.skip = PointLinear(p, c_in, c_out) if c_in != c_out else None

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.act1(self.norm1(self.mix(self.spatial(x)), mask))
        h = self.drop(self.act2(self.norm2(self.temporal(h), mask)))
        return (x if self.skip is None else self.skip(x)) + h


class GraphEncoder(nn.Module):
    """Point channels gathered from the features -> graph blocks -> per frame, Linear(P * C ->
    width) plus Linear(the non-point features -> width) -> activation -> masked mean -> LayerNorm."""

    def __init__(self, layout: PointLayout, channels: int, blocks: int, kernel: int, width: int, dropout: float,
                 act: str) -> None:
        super().__init__()
        self.out_dim = width
        self.register_buffer("columns", torch.tensor(layout.columns, dtype=torch.int64), persistent=False)
        self.register_buffer("extra", torch.tensor(layout.extra, dtype=torch.int64), persistent=False)
        sizes = [layout.channels] + [channels] * blocks
        self.blocks = nn.ModuleList(GraphBlock(layout.rows, a, b, kernel, dropout, act) for a, b in zip(sizes, sizes[1:]))
        self.out = nn.Linear(len(layout.rows) * channels, width)
        self.extra_out = nn.Linear(len(layout.extra), width, bias=False) if layout.extra else None
        self.act = activation(act)
        self.norm = nn.LayerNorm(width)
        self.edges = self.blocks[0].mix.edges

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = zero_padding(x, mask)
        h = x.index_select(-1, self.columns)
        for block in self.blocks:
            h = block(h, mask)
        h = self.out(h)
        if self.extra_out is not None:
            h = h + self.extra_out(x.index_select(-1, self.extra))
        return self.norm(masked_mean(self.act(h), mask))
