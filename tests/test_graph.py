"""The graph model: the skeleton, the point layout a feature set declares, and a study with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.components import FEATURES
from ablate.components._graph import GraphMix, adjacency
from ablate.data import landmarks as lm
from conftest import ablate_cli, spaces_folder


def test_the_skeleton_joins_the_hands_lips_eyes_and_nose_with_normalised_weights() -> None:
    rows = FEATURES.build("lag118").point_layout().rows
    nbrs, weights = adjacency(rows)
    wrist = rows.index(lm.LEFT_HAND[0])
    assert sorted(rows[j] for j in nbrs[wrist]) == sorted(lm.LEFT_HAND[0] + k for k in (0, 1, 5, 17))
    degree = [len(n) for n in nbrs]
    for i, (n, w) in enumerate(zip(nbrs, weights)):
        assert n[0] == i  # self first
        assert w == pytest.approx([1 / np.sqrt(degree[i] * degree[j]) for j in n])
    assert sum(len(n) - 1 for n in nbrs) // 2 == 42 + 40 + 32 + 6 + 2  # hands, lips, eyes, nose, lip midline
    mix = GraphMix(rows, 3)
    x = torch.randn(2, 5, len(rows) * 3)
    a = torch.zeros(len(rows), len(rows))
    for i, (n, w) in enumerate(zip(nbrs, weights)):
        a[i, n] = torch.tensor(w)
    want = torch.einsum("pq,btqc->btpc", a, x.reshape(2, 5, len(rows), 3)).reshape(2, 5, -1)
    torch.testing.assert_close(mix(x), want)


@pytest.mark.parametrize("name", ["lag118", "seed828", "xy_min"])
def test_a_feature_set_says_which_columns_are_which_points(name: str) -> None:
    f = FEATURES.build(name)
    layout = f.point_layout()
    assert sorted(layout.columns + layout.extra) == list(range(f.out_dim))
    rng = np.random.default_rng(0)
    clip = torch.from_numpy(rng.random((12, 543, 3), dtype=np.float32))
    out = f(clip)
    c = layout.channels
    for p in (0, len(layout.rows) - 1):
        cols = list(layout.columns[p * c:(p + 1) * c])
        pos = out[:, cols[:2]]
        if len(f.lags):  # the lag-1 channels are the next frame's position minus this one's
            torch.testing.assert_close(out[:-1, cols[2:4]], pos[1:] - pos[:-1], atol=1e-5, rtol=0)
    # point 3's columns follow its landmark: move that landmark alone and they change most (the
    # others move only with the clip's mean and std, which the moved landmark shifts a little)
    moved = clip.clone()
    moved[:, layout.rows[3], 0] += 0.05
    change = (f(moved) - out).abs().amax(0)
    own = list(layout.columns[3 * c:4 * c])
    others = [i for i in layout.columns if i not in own]
    assert change[own].max() > 20 * change[others].max()


def test_a_graph_arm_trains_and_is_timed_in_a_study(synth_cache: Path, tmp_path: Path) -> None:
    space = ("question: graph against transformer\naxis: model\nmode: ablation\nbaseline: transformer\n"
             "arms:\n  transformer: {}\n  graph: {}\n")
    folder = spaces_folder(tmp_path / "spaces", g=space)
    storage = str(tmp_path / "s.journal")
    r = ablate_cli("run", "g", "--preset", "smoke", "--data", str(synth_cache), "--storage", storage,
                   env={"ABLATE_SPACES": str(folder)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = ablate_cli("report", "g-smoke", "--storage", storage, "--format", "json",
                     env={"ABLATE_SPACES": str(folder)}, cwd=tmp_path)
    arms = {a["arm"]: a for a in json.loads(rep.stdout)["arms"]}
    assert arms["graph"]["n"] == 5 and arms["graph"]["latency_ms"] > 0
    assert 0 < arms["graph"]["parameters"] < arms["transformer"]["parameters"] * 10
