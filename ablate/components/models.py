"""Sequence encoders: frames [B, T, in_dim] plus a valid-frame mask [B, T] -> an embedding [B, out_dim].

Every model has an int attribute `out_dim` and `forward(x, mask)`, mask True = valid frame. Padded
frames never change the embedding (eval mode). Models are exported with B = 1, T dynamic and an
all-True mask, so they are written with the export-safe blocks of `_layers` only.

The lstm and conv1d_transformer models assume RIGHT padding (valid frames first), which is what
padding a batch to its longest sequence gives; the transformer accepts any mask.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ablate.components._graph import GraphEncoder, PointLayout
from ablate.components._layers import (
    AttentionPool,
    ConvBlock,
    MaskedBatchNorm,
    TransformerBlock,
    gather_time,
    masked_mean,
    reverse_valid,
    zero_padding,
)
from ablate.components._layers import activation as make_activation
from ablate.errors import UserError, unknown
from ablate.registry import Registry

# in_dim: the feature set's width; frames: the most frames the feature set gives (its crop length);
# points: which of its columns are which landmark's (components._graph.PointLayout)
MODELS = Registry("model", context=("in_dim", "frames", "points"))


def _check(**values: float) -> None:
    """UserError for the first size that is not positive."""
    for name, value in values.items():
        if value < 1:
            raise UserError(f"model parameter {name} must be >= 1, got {value}")


def _check_dropout(dropout: float, name: str = "dropout") -> None:
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"model parameter {name} must be in [0, 1), got {dropout}")


EMBEDDINGS = ("linear", "mlp", "deep")  # frame embedding: 1, 2 (the baseline's) or 3 Linear layers
POOLINGS = ("cls", "mean", "attention")  # CLS token state, masked mean or attention over the frames


def _embedding(kind: str, in_dim: int, width: int, dropout: float, act: str) -> nn.Sequential:
    """The frame embedding: Linear -> LayerNorm -> activation, once per layer, dropout between."""
    if kind not in EMBEDDINGS:
        raise unknown("embedding", kind, EMBEDDINGS)
    layers: list[nn.Module] = []
    for i in range(EMBEDDINGS.index(kind) + 1):
        if i:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(width if i else in_dim, width), nn.LayerNorm(width), make_activation(act)]
    return nn.Sequential(*layers)


class TransformerEncoder(nn.Module):
    """Frame MLP -> [CLS] + frames + learned positions -> pre-LN blocks -> LayerNorm(pooled state).

    With pooling "mean" or "attention" the frame states are pooled instead of taking the CLS state
    (the CLS token stays in the sequence, an extra key for attention: the exported graph keeps the
    shapes onnx2tf converts; without it, onnx2tf 1.x made a Reshape with two dynamic dimensions)."""

    def __init__(
        self, in_dim: int, blocks: int, heads: int, width: int, dropout: float, ff_mult: int, act: str, max_len: int,
        embedding: str = "mlp", pooling: str = "cls", drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise unknown("pooling", pooling, POOLINGS)
        self.out_dim, self.pooling = width, pooling
        self.max_frames = max_len - 1  # one position is the CLS token's
        self.embed = _embedding(embedding, in_dim, width, dropout, act)
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, ff_mult, dropout, act, drop_path)
                                    for _ in range(blocks))
        if pooling == "attention":
            self.pool = AttentionPool(width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        # Frames past max_len - 1 are dropped (a constant crop, which exports); feature sets are
        # expected to resample or crop long sequences before this.
        x, mask = x[:, : self.max_frames], mask[:, : self.max_frames]
        x = self.embed(zero_padding(x, mask))
        b = x.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1)
        frames = torch.cat([mask.new_zeros((b, 1)), mask], dim=1)  # the frame states, without the CLS one
        mask = torch.cat([mask.new_ones((b, 1)), mask], dim=1)
        x = x + self.pos.index_select(0, torch.arange(x.shape[1], device=x.device))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, mask)
        if self.pooling == "cls":
            return self.norm(x.select(1, 0))
        return self.norm(masked_mean(x, frames) if self.pooling == "mean" else self.pool(x, frames))


@MODELS.register("transformer")
def transformer(
    *,
    in_dim: int,
    frames: int,
    blocks: int = 1,
    heads: int = 16,
    width: int = 512,
    dropout: float = 0.4,
    ff_mult: int = 2,
    activation: str = "swish",
    embedding: str = "mlp",
    pooling: str = "cls",
    max_len: int = 0,
    drop_path: float = 0.0,
) -> nn.Module:
    """Baseline transformer: frame MLP, CLS token, learned positions, pre-LN blocks; CLS -> embedding.

    ff_mult is the feed-forward expansion (hidden = width * ff_mult). activation: swish | hardswish |
    relu | gelu (tanh approximation). embedding: linear | mlp (the baseline's two layers) | deep
    (three). pooling: cls | mean | attention (over the frame states, not the CLS one). max_len counts
    the CLS position, so at most max_len - 1 frames are used (later frames are dropped) whatever the
    pooling; 0 (the default) sizes it to the feature set's frames (its crop length) plus one, so a
    crop-length experiment changes the model with it. drop_path: the share of sequences whose
    residual branches a block skips in training (stochastic depth). Defaults give about 2.6 M parameters plus
    in_dim * 512 (the positions: 385 x 512 at the baseline's crop of 384).
    """
    max_len = max_len or frames + 1
    _check(in_dim=in_dim, blocks=blocks, heads=heads, width=width, ff_mult=ff_mult, max_len=max_len - 1)
    _check_dropout(dropout)
    _check_dropout(drop_path, "drop_path")
    return TransformerEncoder(in_dim, blocks, heads, width, dropout, ff_mult, activation, max_len, embedding, pooling,
                              drop_path)


class BiLSTMEncoder(nn.Module):
    """Projection -> forward and backward LSTM stacks -> masked mean over valid frames -> LayerNorm.

    The backward stack runs forward over each sequence's valid prefix reversed in place
    (`reverse_valid`), so with right padding no valid output depends on a padded frame, without
    packed sequences (those do not export). Each direction is one multi-layer nn.LSTM and the two
    meet only at the end (per-frame concat), unlike nn.LSTM(bidirectional=True), which mixes them
    between layers: with torch 2.13, feeding one LSTM module's output into another exports to ONNX
    with the example T frozen into a Reshape (wrong for every other T), while one multi-layer
    nn.LSTM exports with T dynamic. With layers = 1 the two designs are the same.
    """

    def __init__(self, in_dim: int, width: int, hidden: int, layers: int, dropout: float, act: str) -> None:
        super().__init__()
        self.out_dim = 2 * hidden
        self.project = nn.Sequential(nn.Linear(in_dim, width), nn.LayerNorm(width), make_activation(act))
        between = dropout if layers > 1 else 0.0  # nn.LSTM's dropout acts between its layers only
        self.ahead = nn.LSTM(width, hidden, num_layers=layers, dropout=between, batch_first=True)
        self.behind = nn.LSTM(width, hidden, num_layers=layers, dropout=between, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(2 * hidden)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.drop(self.project(zero_padding(x, mask)))
        reverse = reverse_valid(mask)  # its own inverse
        ahead, _ = self.ahead(x)
        behind, _ = self.behind(gather_time(x, reverse))
        x = self.drop(torch.cat([ahead, gather_time(behind, reverse)], dim=-1))
        return self.norm(masked_mean(x, mask))


@MODELS.register("lstm", tags=("rnn",))  # rnn: autocast runs it in fp16 on cuDNN (see ablate.device)
def lstm(
    *,
    in_dim: int,
    width: int = 256,
    hidden: int = 256,
    layers: int = 2,
    dropout: float = 0.2,
    activation: str = "swish",
) -> nn.Module:
    """Bidirectional LSTM over projected frames, masked mean pooling; embedding size 2 * hidden.

    width: size of the per-frame projection; hidden: LSTM state size per direction; layers: depth
    of each direction's stack (the directions are concatenated after the last layer, see
    BiLSTMEncoder). Needs right padding (valid frames first).
    """
    _check(in_dim=in_dim, width=width, hidden=hidden, layers=layers)
    _check_dropout(dropout)
    return BiLSTMEncoder(in_dim, width, hidden, layers, dropout, activation)


class ConvTransformerEncoder(nn.Module):
    """Linear stem + masked BN -> `stacks` x (causal conv blocks -> one transformer block) -> masked
    mean -> LN -> dropout (the one before the classifier)."""

    def __init__(
        self, in_dim: int, width: int, conv_blocks: int, kernel: int, heads: int, expand: int, ff_mult: int,
        dropout: float, eca: bool, act: str, stacks: int = 1, drop_path: float = 0.0, top_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.out_dim, self.per_stack = width, conv_blocks
        self.stem = nn.Linear(in_dim, width, bias=False)
        self.stem_norm = MaskedBatchNorm(width)
        self.convs = nn.ModuleList(ConvBlock(width, kernel, expand, dropout, eca, act, drop_path)
                                   for _ in range(stacks * conv_blocks))
        self.attns = nn.ModuleList(TransformerBlock(width, heads, ff_mult, dropout, act, drop_path)
                                   for _ in range(stacks))
        self.top = nn.Dropout(top_dropout)
        self.norm = nn.LayerNorm(width)
        self.register_load_state_dict_pre_hook(_one_stack_names)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.stem_norm(self.stem(zero_padding(x, mask)), mask)
        for s, attn in enumerate(self.attns):
            for block in self.convs[s * self.per_stack:(s + 1) * self.per_stack]:
                x = block(x, mask)
            x = attn(x, mask)
        return self.top(self.norm(masked_mean(x, mask)))


def _one_stack_names(module: nn.Module, state: dict[str, Tensor], prefix: str, *args: object) -> None:
    """Weights saved before `stacks` existed name the one transformer block `attn`: read them as
    `attns.0` (final folders trained then still load)."""
    for key in [k for k in state if k.startswith(prefix + "attn.")]:
        state[prefix + "attns.0." + key[len(prefix + "attn."):]] = state.pop(key)


@MODELS.register("conv1d_transformer")
def conv1d_transformer(
    *,
    in_dim: int,
    width: int = 192,
    conv_blocks: int = 3,
    kernel: int = 17,
    heads: int = 4,
    expand: int = 2,
    ff_mult: int = 2,
    dropout: float = 0.2,
    eca: bool = True,
    activation: str = "swish",
    stacks: int = 1,
    drop_path: float = 0.0,
    top_dropout: float = 0.0,
) -> nn.Module:
    """1st-place style: `stacks` x (conv_blocks causal depthwise conv blocks (+ECA), one
    transformer block), masked mean, LayerNorm, dropout (top_dropout, before the head).

    Conv block: Linear(width -> width * expand) -> act -> causal depthwise conv (kernel frames, left
    padding only) -> BatchNorm over valid frames -> act -> ECA (if eca) -> Linear(back to width) ->
    dropout -> drop path, residual. drop_path: the share of sequences whose residual branch a block
    skips in training (stochastic depth, every conv and transformer block). Needs right padding
    (valid frames first). Embedding size = width.
    """
    _check(
        in_dim=in_dim, width=width, conv_blocks=conv_blocks, kernel=kernel, heads=heads, expand=expand,
        ff_mult=ff_mult, stacks=stacks,
    )
    for name, p in (("dropout", dropout), ("drop_path", drop_path), ("top_dropout", top_dropout)):
        _check_dropout(p, name)
    return ConvTransformerEncoder(in_dim, width, conv_blocks, kernel, heads, expand, ff_mult, dropout, eca, activation,
                                  stacks, drop_path, top_dropout)


@MODELS.register("graph")
def graph(
    *,
    in_dim: int,
    points: PointLayout,
    channels: int = 16,
    blocks: int = 3,
    kernel: int = 9,
    width: int = 256,
    dropout: float = 0.2,
    activation: str = "swish",
) -> nn.Module:
    """Spatial-temporal graph convolution over the feature set's points (ST-GCN, Yan et al. 2018).

    The landmark skeleton (hand bones, arms, lip and eye contours, nose; landmarks.SKELETON) joins
    the points, each block maps every point's channels with shared weights, mixes each point with
    its neighbours (normalised adjacency with self-loops), then convolves each channel over time
    (causal, kernel frames); then per frame a Linear over all points plus one over the feature
    set's non-point columns (distances, angles), masked mean over frames, LayerNorm. channels:
    per point in the blocks; width: the embedding. Needs right padding (valid frames first).
    """
    _check(in_dim=in_dim, channels=channels, blocks=blocks, kernel=kernel, width=width)
    _check_dropout(dropout)
    if not points.rows or max(points.columns, default=0) >= in_dim:
        raise UserError(f"model graph: the feature set declares no points within its {in_dim} columns")
    return GraphEncoder(points, channels, blocks, kernel, width, dropout, activation)

