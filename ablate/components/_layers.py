"""Export-safe building blocks shared by the models and the heads.

Everything here is exported PyTorch -> ONNX (dynamo, dynamic T) -> onnx2tf -> TFLite, so it avoids
what breaks there: library attention (nn.MultiheadAttention), exact-erf GELU, F.normalize
(becomes ReduceL2), open-ended or negative slices along time and boolean-mask indexing.

Shapes: x is [B, T, C] (channels last) and mask is a bool [B, T], True = valid frame. The models
that use `MaskedBatchNorm`, `CausalDepthwiseConv` or `reverse_valid` assume RIGHT padding (the valid
frames of each sequence come first), which is what padding a batch to its longest sequence gives.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ablate.errors import UserError, unknown

ACTIVATIONS = ("gelu", "hardswish", "relu", "swish")

# Additive attention bias for padded keys. Finite on purpose: a query row whose keys are all padding
# then gives a finite (meaningless) softmax instead of NaN, and -1e4 is still representable in fp16.
# exp(-1e4) is exactly 0 in float32, so padded keys get exactly zero weight.
MASK_BIAS = -1e4

# True while `export_form()` is open: attention is written out (matmul, softmax, matmul) for the
# ONNX export, whatever the torch version's exporter says of itself.
_EXPORT_FORM = False

# Added to the squared norm before the reciprocal square root: keeps zero vectors finite.
L2_EPS = 1e-12


def activation(name: str) -> nn.Module:
    """The activation module for `name`; gelu is the tanh approximation (exact erf does not export)."""
    if name == "swish":
        return nn.SiLU()
    if name == "hardswish":
        return nn.Hardswish()
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU(approximate="tanh")
    raise unknown("activation", name, ACTIVATIONS)


def l2_normalize(x: Tensor, eps: float = L2_EPS) -> Tensor:
    """x / ||x|| along the last axis, written by hand (F.normalize exports as the rejected ReduceL2)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """Set padded frames to 0 (where, not multiply: a NaN in a pad would survive 0 * NaN)."""
    return torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x [B, T, C] over the valid frames -> [B, C]; a sequence with no valid frame gives 0."""
    count = mask.to(x.dtype).sum(1, keepdim=True).clamp(min=1.0)
    return zero_padding(x, mask).sum(1) / count


class AttentionPool(nn.Module):
    """Weighted mean of frame states [B, T, C] -> [B, C], the weights a softmax over the valid frames
    of a learned score per frame; a sequence with no valid frame gives 0."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        score = self.score(x).squeeze(-1).float()  # the softmax in float32 under autocast
        score = torch.where(mask, score, torch.full((), MASK_BIAS, device=x.device))
        weight = (torch.softmax(score, dim=1) * mask.to(score.dtype)).to(x.dtype)
        return (zero_padding(x, mask) * weight.unsqueeze(-1)).sum(1)


def reverse_valid(mask: Tensor) -> Tensor:
    """Time indices [B, T] that reverse each sequence's valid prefix and leave its padding in place.

    The index map is its own inverse. Built from arange and where, so it traces for any T.
    """
    length = mask.to(torch.long).sum(1, keepdim=True)
    t = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    return torch.where(t < length, length - 1 - t, t)


def gather_time(x: Tensor, index: Tensor) -> Tensor:
    """x [B, T, C] re-ordered along time by index [B, T]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def check_heads(width: int, heads: int) -> None:
    if heads < 1 or width % heads:
        raise UserError(f"width {width} must be a positive multiple of heads {heads}")


@contextlib.contextmanager
def export_form() -> Iterator[None]:
    """Inside: the forms made for the exported graph (attention written out); export.convert opens
    it around torch.onnx.export."""
    global _EXPORT_FORM
    before, _EXPORT_FORM = _EXPORT_FORM, True
    try:
        yield
    finally:
        _EXPORT_FORM = before


class Attention(nn.Module):
    """Multi-head self-attention: projections, then softmax(q k^T / sqrt(d) + bias) v.

    Padded keys get the additive bias MASK_BIAS, so they receive exactly zero weight. Separate q/k/v
    projections keep every tensor 4-D (friendlier to TFLite than a fused 5-D qkv reshape).
    Training and validation run PyTorch's fused kernel (F.scaled_dot_product_attention): on this
    2-core CPU a quick-preset step on a batch of 32 x 384 frames took 342 ms against 622 ms written
    out (1 thread, 2026-11-26), and on a GPU it is one kernel instead of five. The ONNX export
    (`export_form()`, or any torch.onnx.export) gets the same maths written out (matmul, softmax,
    matmul), which onnx2tf converts; tests hold the two equal and check that the export takes it.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        check_heads(dim, heads)
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        bias = (~mask).to(q.dtype).mul(MASK_BIAS)[:, None, None, :]  # [B, 1, 1, T] over keys
        if _EXPORT_FORM or torch.onnx.is_in_onnx_export():
            weights = torch.softmax((q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-1, -2) + bias, dim=-1)
            mixed = weights @ v
        else:
            mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out(mixed.transpose(1, 2).reshape(b, t, d))


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, a residual branch's output [B, T, C] is
    zeroed for a random share p of the sequences of a batch and scaled by 1 / (1 - p) for the
    others; in eval mode it is the identity (nothing of it is exported). Not an nn.Dropout, so
    the late-dropout switch leaves it alone."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0], 1, 1), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class TransformerBlock(nn.Module):
    """Pre-LN encoder block: x + path(drop(attn(LN(x)))), then x + path(drop(ff(LN(x)))).

    The feed-forward is Linear(dim, dim * ff_mult) -> activation -> dropout -> Linear(back to dim);
    path is DropPath(drop_path) (the identity at 0).
    """

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float, act: str, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, dim * ff_mult),
            activation(act),
            nn.Dropout(dropout),
            nn.Linear(dim * ff_mult, dim),
        )
        self.drop = nn.Dropout(dropout)
        self.path = DropPath(drop_path)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.path(self.drop(self.attn(self.norm1(x), mask)))
        return x + self.path(self.drop(self.ff(self.norm2(x))))


class MaskedBatchNorm(nn.Module):
    """BatchNorm over channels of [B, T, C] whose training statistics use the valid frames only.

    Plain BatchNorm would count padded frames, so the batch's padding would change the model.
    Running statistics follow nn.BatchNorm1d (momentum 0.1, unbiased running variance). In eval
    mode this is a per-channel affine map, which exports as plain arithmetic.
    """

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.training:
            n = mask.to(x.dtype).sum().clamp(min=1.0)
            mean = zero_padding(x, mask).sum((0, 1)) / n
            var = zero_padding((x - mean) ** 2, mask).sum((0, 1)) / n
            with torch.no_grad():
                unbiased = var * n / (n - 1).clamp(min=1.0)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class CausalDepthwiseConv(nn.Module):
    """Depthwise 1-D convolution over time that sees the current and the kernel-1 previous frames.

    Causality comes from padding kernel-1 zeros on the left (F.pad, no slicing along time), so with
    right padding a valid frame never sees a padded one.
    """

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(dim, dim, kernel, groups=dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(F.pad(x.transpose(1, 2), (self.kernel - 1, 0)))
        return y.transpose(1, 2)


class ECA(nn.Module):
    """Efficient channel attention (Wang et al. 2020): masked mean over time -> 1-D conv over
    channels (zero padded) -> sigmoid gate per channel.

    The conv is computed as a product with the [C, C] band matrix of its kernel: onnx2tf turned the
    Conv1d over channels into a layout it then failed on, and a matmul converts as it is."""

    def __init__(self, kernel: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel, padding=kernel // 2, bias=False)  # holds the kernel

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        mean = masked_mean(x, mask)  # [B, C]
        channels, k = mean.shape[-1], self.conv.kernel_size[0]
        ch = torch.arange(channels, device=x.device)
        tap = ch.unsqueeze(0) - ch.unsqueeze(1) + k // 2  # band[i, j] = w[j - i + k // 2], zero off the band
        weight = self.conv.weight.reshape(k).to(mean.dtype)
        band = weight.index_select(0, tap.clamp(0, k - 1).reshape(-1)).reshape(channels, channels)
        band = band * ((tap >= 0) & (tap < k)).to(mean.dtype)
        gate = torch.sigmoid(mean @ band.transpose(0, 1))
        return x * gate.unsqueeze(1)


class ConvBlock(nn.Module):
    """1st-place style block: expand -> act -> causal depthwise conv -> masked BN -> act -> ECA
    (optional) -> project -> dropout -> DropPath(drop_path), plus the residual."""

    def __init__(self, dim: int, kernel: int, expand: int, dropout: float, eca: bool, act: str,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = dim * expand
        self.expand = nn.Linear(dim, hidden)
        self.act1 = activation(act)
        self.conv = CausalDepthwiseConv(hidden, kernel)
        self.norm = MaskedBatchNorm(hidden)
        self.act2 = activation(act)
        self.eca = ECA() if eca else None
        self.project = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)
        self.path = DropPath(drop_path)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.act2(self.norm(self.conv(self.act1(self.expand(x))), mask))
        if self.eca is not None:
            h = self.eca(h, mask)
        return x + self.path(self.drop(self.project(h)))
