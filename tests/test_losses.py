"""Heads and losses: hand-computed values, agreement with pytorch-metric-learning, the Head
interface for every entry, training sanity and export of the inference logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.components.losses import LOSSES, Head
from ablate.errors import UserError

D, C = 16, 5


def build(name: str, emb_dim: int = D, num_classes: int = C, **params: object) -> Head:
    torch.manual_seed(0)
    return LOSSES.build(name, params, emb_dim=emb_dim, num_classes=num_classes)


def batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g), torch.randint(0, C, (n,), generator=g)


# ---- hand computation helpers: plain Python floats, math only --------------------------------


def unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


def smoothed_ce(z: list[float], y: int, eps: float) -> float:
    """-sum_k q_k log softmax(z)_k with q = (1 - eps) one_hot(y) + eps / C."""
    log_total = math.log(sum(math.exp(v) for v in z))
    return -sum(((1 - eps) * (k == y) + eps / len(z)) * (v - log_total) for k, v in enumerate(z))


def focal_value(z: list[float], y: int, gamma: float, alpha: float) -> float:
    p = math.exp(z[y]) / sum(math.exp(v) for v in z)
    return -alpha * (1 - p) ** gamma * math.log(p)


def set_centres(head: Head, angles: list[float]) -> None:
    with torch.no_grad():
        head.weight.copy_(torch.tensor([unit(a) for a in angles], dtype=torch.float64))


# 2-D setting for the margin heads: three class centres on the unit circle and two embeddings.
# Sample 2's target angle (2.9 rad) is past pi - margin, so ArcFace uses cos(theta) - m sin(m).
CENTRES = [0.0, 1.2, 2.6]
EMB_ANGLES = [0.4, 1.2 + 2.9]
EMB = torch.tensor([[2 * v for v in unit(EMB_ANGLES[0])], [0.5 * v for v in unit(EMB_ANGLES[1])]], dtype=torch.float64)
LABELS = torch.tensor([0, 1])
S, M = 10.0, 0.5


def cosines(i: int) -> list[float]:
    return [math.cos(EMB_ANGLES[i] - c) for c in CENTRES]


def arcface_logits_by_hand(i: int) -> list[float]:
    cos = cosines(i)
    y = int(LABELS[i])
    theta = abs(math.remainder(EMB_ANGLES[i] - CENTRES[y], 2 * math.pi))
    cos[y] = math.cos(theta + M) if theta <= math.pi - M else math.cos(theta) - M * math.sin(M)
    return [S * v for v in cos]


def margin_head(name: str, **params: object) -> Head:
    head = LOSSES.build(name, params, emb_dim=2, num_classes=3).double()
    set_centres(head, CENTRES)
    return head


def test_arcface_with_label_smoothing_hand_value() -> None:
    eps = 0.3
    head = margin_head("arcface", scale=S, margin_rad=M, label_smoothing=eps)
    assert EMB_ANGLES[1] - CENTRES[1] > math.pi - M  # the second sample takes the fallback branch
    expected = sum(smoothed_ce(arcface_logits_by_hand(i), int(LABELS[i]), eps) for i in range(2)) / 2
    assert abs(head(EMB, LABELS).item() - expected) < 1e-6
    logits = head.logits(EMB)
    for i in range(2):  # inference logits carry no margin
        assert np.allclose(logits[i].tolist(), [S * v for v in cosines(i)], atol=1e-9)


def test_cosface_with_label_smoothing_hand_value() -> None:
    eps, margin = 0.2, 0.35
    head = margin_head("cosface", scale=S, margin=margin, label_smoothing=eps)
    expected = 0.0
    for i in range(2):
        z = [S * v for v in cosines(i)]
        z[int(LABELS[i])] -= S * margin
        expected += smoothed_ce(z, int(LABELS[i]), eps) / 2
    assert abs(head(EMB, LABELS).item() - expected) < 1e-6


def test_subcenter_arcface_hand_value() -> None:
    """Two sub-centres per class: the closer one decides, then the margin and smoothing apply."""
    head = build("subcenter_arcface", 2, 3, sub_centers=2, scale=S, margin_rad=M, label_smoothing=0.1)
    head = head.double()
    far = [a + 1.0 for a in CENTRES]  # the other sub-centre of each class, 1 rad further round
    with torch.no_grad():
        head.weight.copy_(torch.tensor([unit(a) for pair in zip(far, CENTRES) for a in pair], dtype=torch.float64))
    i = 0  # sample 0 (0.4 rad) is closer to every class's CENTRES entry than to its far one
    assert all(math.cos(EMB_ANGLES[i] - c) > math.cos(EMB_ANGLES[i] - f) for c, f in zip(CENTRES, far))
    expected = smoothed_ce(arcface_logits_by_hand(i), 0, 0.1)
    assert abs(head(EMB[:1], LABELS[:1]).item() - expected) < 1e-6


def test_arcface_focal_hand_value() -> None:
    gamma, alpha = 2.0, 0.25
    head = margin_head("arcface_focal", scale=S, margin_rad=M, gamma=gamma, alpha=alpha)
    expected = sum(focal_value(arcface_logits_by_hand(i), int(LABELS[i]), gamma, alpha) for i in range(2)) / 2
    assert abs(head(EMB, LABELS).item() - expected) < 1e-6


def test_arcface_ce_hand_value() -> None:
    w, eps = 0.3, 0.1
    head = margin_head("arcface_ce", scale=S, margin_rad=M, label_smoothing=eps, ce_weight=w)
    expected = 0.0
    for i in range(2):
        y = int(LABELS[i])
        arc = smoothed_ce(arcface_logits_by_hand(i), y, eps)
        plain = smoothed_ce([S * v for v in cosines(i)], y, 0.0)
        expected += ((1 - w) * arc + w * plain) / 2
    assert abs(head(EMB, LABELS).item() - expected) < 1e-6


def test_focal_hand_value() -> None:
    gamma, alpha = 2.0, 0.5
    head = build("focal", 3, 3, gamma=gamma, alpha=alpha).double()
    bias = [0.1, -0.2, 0.3]
    with torch.no_grad():
        head.fc.weight.copy_(torch.eye(3, dtype=torch.float64))
        head.fc.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    emb = [[1.0, 2.0, 0.5], [0.0, -1.0, 2.0]]
    labels = [1, 0]
    expected = sum(focal_value([e + b for e, b in zip(row, bias)], y, gamma, alpha) for row, y in zip(emb, labels)) / 2
    got = head(torch.tensor(emb, dtype=torch.float64), torch.tensor(labels)).item()
    assert abs(got - expected) < 1e-6


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    emb, labels = batch()
    focal, ce = build("focal", gamma=0.0), build("ce")
    ce.load_state_dict(focal.state_dict())
    torch.testing.assert_close(focal(emb, labels), ce(emb, labels))
    torch.testing.assert_close(focal(emb, labels), F.cross_entropy(focal.logits(emb), labels))
    assert not torch.allclose(build("focal", gamma=2.0)(emb, labels), ce(emb, labels))


def test_ce_smooth_is_label_smoothed_cross_entropy() -> None:
    emb, labels = batch()
    head = build("ce_smooth", label_smoothing=0.2)
    torch.testing.assert_close(head(emb, labels), F.cross_entropy(head.logits(emb), labels, label_smoothing=0.2))


def adacos_by_hand(s_old: float, angles: list[float], centres: list[float], labels: list[int]) -> tuple[float, float]:
    """(new scale, loss) following Zhang et al. 2019 with the batch's statistics."""
    cos = [[math.cos(a - c) for c in centres] for a in angles]
    b_avg = sum(math.exp(s_old * v) for row, y in zip(cos, labels) for k, v in enumerate(row) if k != y) / len(angles)
    targets = sorted(abs(math.remainder(a - centres[y], 2 * math.pi)) for a, y in zip(angles, labels))
    theta_med = targets[(len(targets) - 1) // 2]  # torch.median: the lower middle value
    s_new = math.log(b_avg) / math.cos(min(math.pi / 4, theta_med))
    loss = sum(smoothed_ce([s_new * v for v in row], y, 0.0) for row, y in zip(cos, labels)) / len(angles)
    return s_new, loss


def test_adacos_hand_values() -> None:
    centres = [0.0, 2 * math.pi / 3, 4 * math.pi / 3]
    head = build("adacos", 2, 3).double()
    set_centres(head, centres)
    s0 = math.sqrt(2) * math.log(3 - 1)  # fixed AdaCos scale for C = 3
    assert abs(head.scale.item() - s0) < 1e-6
    labels = [0, 1, 2]
    # step 1: target angles 0.3, 0.094, 0.189 (median below pi/4); step 2: 1.0, 1.2, 0.9 (above)
    for angles in ([0.3, 2.0, 4.0], [1.0, centres[1] + 1.2, centres[2] - 0.9]):
        emb = torch.tensor([unit(a) for a in angles], dtype=torch.float64) * 3
        s_new, expected = adacos_by_hand(head.scale.item(), angles, centres, labels)
        loss = head.train()(emb, torch.tensor(labels))
        assert abs(head.scale.item() - s_new) < 1e-6
        assert abs(loss.item() - expected) < 1e-6
        torch.testing.assert_close(head.logits(emb), s_new * F.normalize(emb) @ head.weight.t())
    frozen = head.scale.item()
    head.eval()(emb * 2 + 1, torch.tensor([2, 0, 1]))
    assert head.scale.item() == frozen  # eval mode never updates the scale
    assert "scale" in head.state_dict()


def test_adacos_needs_three_classes() -> None:
    with pytest.raises(UserError, match="at least 3 classes"):
        build("adacos", D, 2)


PML = {
    "arcface": ("ArcFaceLoss", {}),
    "subcenter_arcface": ("SubCenterArcFaceLoss", {"sub_centers": 3}),
    "cosface": ("CosFaceLoss", {}),
}


@pytest.mark.parametrize("name", sorted(PML))
def test_agrees_with_pytorch_metric_learning(name: str) -> None:
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    cls_name, extra = PML[name]
    margin = {"cosface": {"margin": 0.35}}.get(name, {"margin_rad": 0.4})
    head = build(name, scale=30.0, label_smoothing=0.0, **margin).double()
    pml_margin = math.degrees(margin["margin_rad"]) if "margin_rad" in margin else margin["margin"]
    reference = getattr(losses, cls_name)(
        num_classes=C, embedding_size=D, margin=pml_margin, scale=30.0, **extra
    ).double()
    with torch.no_grad():
        reference.W.copy_(head.weight.t())  # pml keeps centres as columns, [D, C * k]
    emb, labels = batch(12)
    emb = emb.double()
    with torch.no_grad():  # sample 0 points away from its target: ArcFace's theta > pi - m branch
        emb[0] = -5 * head.weight[int(labels[0]) * head.sub_centers]
    torch.testing.assert_close(head(emb, labels), reference(emb, labels), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(head.logits(emb), reference.get_logits(emb), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", LOSSES.names(tag="cosine"))
def test_cosine_logits_pick_the_nearest_centre_without_margin(name: str) -> None:
    head = build(name)
    emb, _ = batch(32, seed=3)
    cos = F.normalize(emb) @ F.normalize(head.weight).t()  # [B, C * k]
    nearest = cos.argmax(1) // head.sub_centers
    logits = head.logits(emb)
    assert torch.equal(logits.argmax(1), nearest)
    best = cos.reshape(len(emb), C, head.sub_centers).amax(-1)
    torch.testing.assert_close(logits, head.scale * best)


def test_margin_heads_are_tagged() -> None:
    assert set(LOSSES.names(tag="margin")) == {"arcface", "subcenter_arcface", "cosface", "arcface_focal", "arcface_ce",
                                               "magface"}
    assert set(LOSSES.names(tag="margin")) < set(LOSSES.names(tag="cosine"))


@pytest.mark.parametrize("name", LOSSES.names())
def test_head_interface(name: str) -> None:
    head = build(name)
    assert isinstance(head, Head)
    emb, labels = batch()
    assert head.logits(emb).shape == (len(emb), C)
    loss = head.train()(emb, labels)
    assert loss.shape == () and torch.isfinite(loss)


@pytest.mark.parametrize("name", LOSSES.names())
def test_one_sgd_step_lowers_the_loss(name: str) -> None:
    """Evaluated in eval mode so AdaCos's scale stays fixed: one fixed objective, one small step."""
    head = build(name).eval()
    emb, labels = batch()
    emb = nn.Parameter(emb)
    opt = torch.optim.SGD([emb, *head.parameters()], lr=1e-3)
    before = head(emb, labels)
    before.backward()
    opt.step()
    with torch.no_grad():
        after = head(emb, labels)
    assert after < before


@pytest.mark.parametrize("name", LOSSES.names())
def test_zero_embeddings_give_finite_values(name: str) -> None:
    head = build(name).train()
    emb = torch.zeros(4, D, requires_grad=True)
    loss = head(emb, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(head.logits(emb)).all()
    assert torch.isfinite(emb.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", LOSSES.names())
def test_mixed_precision_loss_is_float32(name: str) -> None:
    head = build(name).train()
    emb, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = head(emb, labels)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(loss.item() - build(name).train()(emb, labels).item()) < 0.1 * (1 + abs(loss.item()))


@pytest.mark.parametrize(
    ("name", "params"),
    [("arcface", dict(margin_rad=2.0)), ("subcenter_arcface", dict(sub_centers=0)), ("cosface", dict(scale=0.0)),
     ("ce_smooth", dict(label_smoothing=1.0)), ("focal", dict(gamma=-1.0)), ("arcface_ce", dict(ce_weight=1.5)),
     ("magface", dict(norms=[110.0, 10.0])), ("magface", dict(margins=[0.5, 2.0])), ("magface", dict(reg_weight=-1.0)),
     ("multi_similarity", dict(scale=0.0)), ("multi_similarity", dict(epsilon=2.0))],
)
def test_bad_params_are_user_errors(name: str, params: dict) -> None:
    with pytest.raises(UserError):
        build(name, **params)


def test_magface_is_arcface_at_the_norms_margin_plus_its_regulariser() -> None:
    """Embeddings of norm a get ArcFace with margin m(a) (linear in a between the norm bounds), plus
    reg_weight * (1/a + a/high^2); below the low norm the low margin, above the high one the high."""
    mag = build("magface", scale=30.0, norms=[0.5, 1.5], margins=[0.2, 0.6], reg_weight=3.0).double()  # x sqrt(16)
    emb, labels = batch(12)
    emb = emb.double()
    for a, m in ((4.0, 0.4), (1.0, 0.2), (9.0, 0.6)):  # inside [2, 6], below, above
        arc = build("arcface", scale=30.0, margin_rad=m, label_smoothing=0.0).double()
        with torch.no_grad():
            arc.weight.copy_(mag.weight)
        x = a * F.normalize(emb)
        clamped = min(max(a, 2.0), 6.0)
        torch.testing.assert_close(mag(x, labels), arc(x, labels) + 3.0 * (1 / clamped + clamped / 36.0))
        torch.testing.assert_close(mag.logits(x), arc.logits(x))
    with torch.no_grad():  # sample 0 points away from its target: the branch past theta = pi - m
        emb[0] = -5 * mag.weight[int(labels[0])]
    arc = build("arcface", scale=30.0, margin_rad=0.4, label_smoothing=0.0).double()
    with torch.no_grad():
        arc.weight.copy_(mag.weight)
    x = 4.0 * F.normalize(emb)
    torch.testing.assert_close(mag(x, labels), arc(x, labels) + 3.0 * (1 / 4.0 + 4.0 / 36.0))


def test_magface_trains_the_norm_of_a_layernorm_sized_embedding() -> None:
    """At the default bounds a LayerNorm-sized embedding (norm sqrt(D)) is inside them: its norm
    gets a gradient (bounds fixed at the paper's absolute 10-110 gave none below width 100)."""
    head = build("magface", emb_dim=64)
    emb = F.normalize(torch.randn(8, 64)) * 8.0  # sqrt(64)
    emb.requires_grad_(True)
    _, labels = batch(8)
    head(emb, labels).backward()
    radial = (emb.grad * F.normalize(emb.detach())).sum(-1)
    assert radial.abs().min() > 1e-6


def test_multi_similarity_is_the_pair_loss_plus_cross_entropy_on_the_centres() -> None:
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    miners = pytest.importorskip("pytorch_metric_learning.miners")
    head = build("multi_similarity", ce_weight=0.5, scale=20.0)
    emb, labels = batch(16)
    pair = losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5)(emb, labels, miners.MultiSimilarityMiner(0.1)(emb, labels))
    assert pair.item() > 0  # the batch has positive and negative pairs to mine
    ce = F.cross_entropy(head.logits(emb), labels)
    torch.testing.assert_close(head(emb, labels), pair + 0.5 * ce)
    per_sample = head(emb, labels, reduction="none")
    assert per_sample.shape == (16,)
    torch.testing.assert_close(per_sample.mean(), head(emb, labels))


class _AllLogits(nn.Module):
    def __init__(self, heads: dict[str, Head]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(heads)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(head.logits(emb) for head in self.heads.values())


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_logits_export_to_onnx(tmp_path) -> None:
    """Every head's inference logits in one export (B = 1), compared with onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    heads = {name: build(name) for name in LOSSES.names()}
    for head in heads.values():  # give AdaCos a non-initial scale
        head.train()(*batch())
    model = _AllLogits(heads).eval()
    path = tmp_path / "heads.onnx"
    torch.onnx.export(model, (torch.randn(1, D),), str(path), dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    emb = torch.randn(1, D)
    got = session.run(None, {session.get_inputs()[0].name: emb.numpy()})
    with torch.no_grad():
        expected = model(emb)
    for name, g, e in zip(heads, got, expected):
        np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=0, err_msg=name)
