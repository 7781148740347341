"""Models and their export-safe building blocks: shapes, padding invariance, equality with the
library implementations they replace, and ONNX export with a dynamic number of frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.components import _layers
from ablate.components.models import MODELS
from ablate.errors import UserError
from conftest import points_for

IN_DIM = 12
# Small sizes so the tests stay fast; a model missing here is tested at its defaults.
SMALL: dict[str, dict] = {
    "transformer": dict(width=32, heads=4, blocks=2, max_len=64, activation="gelu"),
    "lstm": dict(width=16, hidden=16, layers=2),
    "conv1d_transformer": dict(width=32, heads=4, conv_blocks=2, kernel=5, activation="hardswish"),
    "graph": dict(channels=4, blocks=2, kernel=5, width=32),
}


def build(name: str, **overrides: object) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.build(name, {**SMALL.get(name, {}), **overrides}, in_dim=IN_DIM, frames=384,
                        points=points_for(IN_DIM))


def padded_batch(lengths: list[int], total: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded batch; the padding holds large junk and NaN, which must not matter."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), total, IN_DIM, generator=g)
    mask = torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]
    junk = 100 * torch.randn(x.shape, generator=g)
    junk[:, :, 0] = float("nan")
    return torch.where(mask[..., None], x, junk), mask


def warm_up(model: nn.Module) -> None:
    """One training-mode forward so batch-norm running statistics are not the identity."""
    model.train()
    x, mask = padded_batch([7, 3, 10], 10, seed=1)
    with torch.no_grad():
        model(x * 2 + 1, mask)
    model.eval()


@pytest.mark.parametrize("name", MODELS.names())
def test_output_shape_and_gradients(name: str) -> None:
    model = build(name)
    x, mask = padded_batch([5, 1, 8], 8)
    out = model.train()(x, mask)
    assert isinstance(model.out_dim, int)
    assert out.shape == (3, model.out_dim)
    out.square().sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not unused, f"parameters without a finite gradient: {unused}"


@pytest.mark.parametrize("name", MODELS.names())
def test_padding_does_not_change_the_embedding(name: str) -> None:
    model = build(name)
    warm_up(model)
    lengths = [5, 1, 9]
    x, mask = padded_batch(lengths, 9)
    x_more, mask_more = padded_batch(lengths, 20)
    x_more[:, :9] = torch.where(mask[..., None], x, x_more[:, :9])
    with torch.no_grad():
        batch = model(x, mask)
        more = model(x_more, mask_more)
        alone = [model(x[i : i + 1, :n], torch.ones(1, n, dtype=torch.bool)) for i, n in enumerate(lengths)]
    torch.testing.assert_close(more, batch, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat(alone), batch, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MODELS.names())
def test_training_forward_ignores_extra_padding(name: str) -> None:
    """Batch statistics (masked batch norm) come from valid frames only (dropout off to compare)."""
    model = build(name, dropout=0.0).train()
    x, mask = padded_batch([4, 6], 6)
    x_more, mask_more = padded_batch([4, 6], 15)
    x_more[:, :6] = torch.where(mask[..., None], x, x_more[:, :6])
    torch.testing.assert_close(model(x_more, mask_more), model(x, mask), atol=1e-5, rtol=0)


def test_default_sizes_are_moderate() -> None:
    counts = {n: sum(p.numel() for p in MODELS.build(n, in_dim=200, frames=384, points=points_for(200)).parameters())
              for n in MODELS.names()}
    assert 2.5e6 < counts["transformer"] < 3.5e6, counts  # baseline: blocks 1, width 512, ff x2
    assert all(2e5 < c < 5e6 for n, c in counts.items() if n != "graph"), counts
    assert 1e5 < counts["graph"] < 1e6, counts  # shared per-point weights: small by design


def test_conv_model_without_eca() -> None:
    with_eca, without = build("conv1d_transformer"), build("conv1d_transformer", eca=False)
    x, mask = padded_batch([3, 6], 6)
    assert without.eval()(x, mask).shape == (2, without.out_dim)
    assert sum(p.numel() for p in without.parameters()) < sum(p.numel() for p in with_eca.parameters())


def test_transformer_uses_at_most_max_len_minus_one_frames() -> None:
    model = build("transformer").eval()
    x = torch.randn(1, 100, IN_DIM)
    ones = torch.ones(1, 100, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(model(x, ones), model(x[:, :63], ones[:, :63]))
        assert not torch.allclose(model(x[:, :40], ones[:, :40]), model(x[:, :63], ones[:, :63]))


def test_attention_equals_library_attention() -> None:
    torch.manual_seed(0)
    dim, heads = 32, 4
    attn = _layers.Attention(dim, heads)
    lib = nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        lib.in_proj_weight.copy_(torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]))
        lib.in_proj_bias.copy_(torch.cat([attn.q.bias, attn.k.bias, attn.v.bias]))
        lib.out_proj.weight.copy_(attn.out.weight)
        lib.out_proj.bias.copy_(attn.out.bias)
    x = torch.randn(3, 7, dim)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 4, 1])[:, None]
    ours = attn(x, mask)
    expected, _ = lib(x, x, x, key_padding_mask=~mask, need_weights=False)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(3, 7, heads, dim // heads).transpose(1, 2)

    sdpa = F.scaled_dot_product_attention(
        split(attn.q(x)), split(attn.k(x)), split(attn.v(x)), attn_mask=mask[:, None, None, :]
    )
    torch.testing.assert_close(ours, attn.out(sdpa.transpose(1, 2).reshape(3, 7, dim)), atol=1e-5, rtol=1e-5)


def test_attention_exported_form_equals_the_fused_kernel() -> None:
    """The ONNX export writes attention out; training runs the fused kernel: the same numbers,
    also for gradients, for padded keys and for a clip of one frame."""
    torch.manual_seed(0)
    attn = _layers.Attention(32, 4)
    x = torch.randn(3, 9, 32, requires_grad=True)
    mask = torch.arange(9)[None, :] < torch.tensor([9, 4, 1])[:, None]
    fused = attn(x, mask)
    (g_fused,) = torch.autograd.grad(fused[mask].square().sum(), x)
    with _layers.export_form():
        written = attn(x, mask)
        (g_written,) = torch.autograd.grad(written[mask].square().sum(), x)
    torch.testing.assert_close(fused, written, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_fused, g_written, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(fused[1], attn(x, torch.ones_like(mask))[1])  # the mask is used


def test_masked_batch_norm_equals_batch_norm_on_valid_frames() -> None:
    torch.manual_seed(0)
    ours, lib = _layers.MaskedBatchNorm(6), nn.BatchNorm1d(6)
    x = torch.randn(3, 8, 6) * 3 + 2
    mask = torch.arange(8)[None, :] < torch.tensor([8, 5, 2])[:, None]
    x_junk = torch.where(mask[..., None], x, torch.full_like(x, float("nan")))
    for _ in range(2):
        out = ours(x_junk, mask)
        expected = lib(x[mask])  # [valid frames, C]
        torch.testing.assert_close(out[mask], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.running_mean, lib.running_mean)
    torch.testing.assert_close(ours.running_var, lib.running_var)
    ours.eval(), lib.eval()
    torch.testing.assert_close(ours(x, mask)[mask], lib(x[mask]), atol=1e-5, rtol=1e-5)


def test_causal_conv_equals_padded_conv_and_ignores_the_future() -> None:
    torch.manual_seed(0)
    conv = _layers.CausalDepthwiseConv(4, kernel=5)
    x = torch.randn(2, 9, 4)
    lib = F.conv1d(x.transpose(1, 2), conv.conv.weight, padding=4, groups=4)[:, :, :9].transpose(1, 2)
    torch.testing.assert_close(conv(x), lib)
    changed = x.clone()
    changed[:, 6:] = 50.0
    torch.testing.assert_close(conv(changed)[:, :6], conv(x)[:, :6])


def test_reverse_valid_hand_example() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    expected = torch.tensor([[2, 1, 0, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]])
    assert torch.equal(_layers.reverse_valid(mask), expected)


def test_masked_mean_and_l2_normalize_hand_values() -> None:
    x = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [float("nan"), 100.0]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(_layers.masked_mean(x, mask), torch.tensor([[2.0, 4.0]]))
    v = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(_layers.l2_normalize(v), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


def test_activations() -> None:
    x = torch.linspace(-4, 4, 81)
    torch.testing.assert_close(_layers.activation("gelu")(x), F.gelu(x, approximate="tanh"))
    torch.testing.assert_close(_layers.activation("swish")(x), x * torch.sigmoid(x))
    with pytest.raises(UserError, match="gelu, hardswish, relu, swish"):
        _layers.activation("mish")
    with pytest.raises(UserError, match="activation"):
        MODELS.build("transformer", {"activation": "elu"}, in_dim=IN_DIM, frames=384)


@pytest.mark.parametrize(
    ("name", "params"),
    [("transformer", dict(width=30, heads=4)), ("transformer", dict(dropout=1.0)), ("lstm", dict(layers=0)),
     ("conv1d_transformer", dict(kernel=0)), ("graph", dict(channels=0)), ("graph", dict(dropout=1.0))],
)
def test_bad_params_are_user_errors(name: str, params: dict) -> None:
    with pytest.raises(UserError):
        MODELS.build(name, params, in_dim=IN_DIM, frames=384, points=points_for(IN_DIM))


class _AllValid(nn.Module):
    """The exported form: B = 1, frames only, every frame valid."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, torch.ones(x.shape[0], x.shape[1], dtype=torch.bool, device=x.device))


# The exporter's own deprecation chatter (torch 2.13), not ours.
EXPORT_WARNINGS = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@EXPORT_WARNINGS
@pytest.mark.parametrize("name", MODELS.names())
def test_onnx_export_with_dynamic_frames(name: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = build(name)
    warm_up(model)
    wrapped = _AllValid(model).eval()
    path = tmp_path / f"{name}.onnx"
    frames = torch.export.Dim("T", min=1, max=1024)
    torch.onnx.export(
        wrapped, (torch.randn(1, 10, IN_DIM),), str(path), dynamo=True,
        dynamic_shapes={"x": {1: frames}}, verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    for t in (1, 2, 37, 300, 500):
        x = torch.randn(1, t, IN_DIM)
        with torch.no_grad():
            expected = wrapped(x).numpy()
        (got,) = session.run(None, {input_name: x.numpy()})
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=f"{name} at T={t}")
        assert math.isfinite(float(np.abs(got).sum()))
