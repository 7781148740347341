"""The export of the models that a smoke-size trained ensemble does not cover: the baseline's and
the winner's full widths, the graph model, the transformer's options, seed828's options and the
vote and max rules, each untrained, through ONNX -> onnx2tf -> TFLite; the TFLite model must
compute what PyTorch does. The conversions run in a worker process (the `untrained` fixture)."""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("onnx2tf", reason="the export extra is not installed (pip install -e '.[export]')")
pytest.importorskip("ai_edge_litert", reason="the export extra is not installed (pip install -e '.[export]')")

from test_export import _to_tflite_fp32  # noqa: E402

from ablate.export.check import FP32_MAX_ABS, TFLiteModel  # noqa: E402
from ablate.export.ensemble import Ensemble  # noqa: E402
from ablate.spaces import recipe_config  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning",
                                         "ignore::DeprecationWarning"), pytest.mark.timeout(900)]

Job = tuple[torch.nn.Module, "Future[Path]"]  # a model (this process's copy) and its TFLite fp32 file, when done


def _worker_setup() -> None:
    # pytest's warning filters (pytestmark) do not reach another process; its torch only traces
    # (the exporter), so one thread leaves the other core to this process
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def untrained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Job]]:
    """The untrained models of the selected tests (UNTRAINED, at the end), each converted by a worker
    process into its own folder; the tests compare it with this process's copy. Started with the
    module: converting is single-threaded Python for most of its time (onnx2tf builds and re-runs a
    Keras graph op by op), so the worker converts the next models while this process checks the
    last one; with `make test` (pytest-xdist, a file per test process), test_export.py's trained
    ensemble is exported meanwhile in the other test process."""
    names = [item.name for item in request.session.items if item.path == request.path and item.name in UNTRAINED]
    spawn = multiprocessing.get_context("spawn")  # fork would copy this process with its torch threads running
    pool = ProcessPoolExecutor(1, mp_context=spawn, initializer=_worker_setup)
    jobs = {}
    try:
        for name in names:  # in the order the tests will run: the first needed is the first converted
            torch.manual_seed(0)
            module = UNTRAINED[name]().eval()
            jobs[name] = (module, pool.submit(_to_tflite_fp32, module, tmp_path_factory.mktemp("untrained")))
        yield jobs
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure: no waiting for conversions nobody reads


def _converted(untrained: dict[str, Job], name: str) -> tuple[torch.nn.Module, TFLiteModel]:
    """Test `name`'s untrained model and its TFLite fp32 model (an export error is raised here)."""
    assert name in untrained, f"{name}: no entry in UNTRAINED (a renamed test?)"
    module, job = untrained[name]
    return module, TFLiteModel(job.result())


def _one(config: Any, num_classes: int) -> Ensemble:
    """An untrained ensemble of one `config` model."""
    from ablate.parts import build_parts

    return Ensemble([build_parts(config, num_classes)])


def _untrained_parity(untrained: dict[str, Job], name: str, lengths: tuple[int, ...]) -> None:
    """Test `name`'s untrained ensemble through ONNX -> onnx2tf -> TFLite: at each length (random
    frames, the left hand missing in the first half), TFLite computes what PyTorch does."""
    ens, model = _converted(untrained, name)
    rng = np.random.default_rng(0)
    for n in lengths:
        frames = rng.random((n, 543, 3), dtype=np.float32)
        frames[: n // 2, 468:489] = np.nan
        with torch.no_grad():
            want = ens(torch.from_numpy(frames)).numpy()
        assert float(np.max(np.abs(model(frames) - want))) <= FP32_MAX_ABS, n


def test_the_baseline_width_exports_too(untrained: dict[str, Job], request: pytest.FixtureRequest) -> None:
    """At width 512 the head's weight normalisation is a constant subgraph too big for the exporter's
    own folding; onnx2tf failed on it until convert folds it (a smoke-size model never shows this)."""
    _untrained_parity(untrained, request.node.name, (1, 50, 400))


def _graph_model() -> Ensemble:
    from ablate.config import Component

    return _one(recipe_config("smoke").replace(model=Component("graph", {"channels": 8, "blocks": 2, "width": 64})), 12)


def test_the_graph_model_exports_with_parity(untrained: dict[str, Job], request: pytest.FixtureRequest) -> None:
    """The graph model at the quick preset's sizes on the baseline's features (points and the
    non-point hand distances): gathers on the channel axis, per-point reshapes, temporal convs."""
    _untrained_parity(untrained, request.node.name, (1, 2, 50, 384, 400))


def test_the_winner_recipe_exports_with_parity(untrained: dict[str, Job], request: pytest.FixtureRequest) -> None:
    """The 1st place's model at its full width (lag118 features, two stacks of conv blocks and a
    transformer block, drop path and the dropout before the head: both the identity in the graph)."""
    _untrained_parity(untrained, request.node.name, (1, 2, 50, 384, 400))


TRANSFORMER_VARIANTS = [
    {"activation": "relu", "embedding": "linear", "pooling": "mean", "ff_mult": 1},
    {"activation": "gelu", "embedding": "deep", "pooling": "attention", "ff_mult": 4},
]


def _transformer(variant: dict[str, Any]) -> Ensemble:
    from ablate.config import Component

    cfg = recipe_config("smoke")
    return _one(cfg.replace(model=Component("transformer", {**cfg.model.params, **variant})), 12)


@pytest.mark.parametrize("variant", TRANSFORMER_VARIANTS)
def test_transformer_options_export_with_parity(variant: dict[str, Any], untrained: dict[str, Job],
                                                request: pytest.FixtureRequest) -> None:
    """The transformer_parts arms (activation, embedding depth, feed-forward width, pooling) change
    the inference graph: each option exports and the TFLite model computes what PyTorch does."""
    # the lengths of the export checks: one frame, two, typical, the crop, past it
    _untrained_parity(untrained, request.node.name, (1, 2, 50, 384, 600))


class _BothRules(torch.nn.Module):
    """The vote and the max rule over the same members, side by side: one conversion tests both."""

    def __init__(self, members: list[Any]) -> None:
        super().__init__()
        self.vote, self.max = Ensemble(members, rule="vote"), Ensemble(members, rule="max")

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:  # the input's name is the export's (check.INPUT)
        return torch.cat([self.vote(inputs), self.max(inputs)])


def _feature_options() -> _BothRules:
    """Two untrained members with every option of seed828 at once, under both rules."""
    from ablate.config import Component
    from ablate.parts import build_parts

    options = {"normalisation": "body", "one_hand": True, "joint_angles": True, "bone_angles": True,
               "external_distances": True, "frames": 32}
    cfg = recipe_config("smoke")
    cfg = cfg.replace(features=Component("seed828", {**cfg.features.params, **options}))
    return _BothRules([build_parts(cfg, 12) for _ in range(2)])


def test_feature_options_and_ensemble_rules_export_with_parity(untrained: dict[str, Job],
                                                               request: pytest.FixtureRequest) -> None:
    """The preprocessing arms and the vote and max rules change the inference graph: two untrained
    members with every option of seed828 at once, combined by both rules, through ONNX -> onnx2tf
    -> TFLite compute what PyTorch does (the right hand missing: one_hand mirrors the clips).
    onnxruntime parity of each option alone is in test_features.py. One conversion for all: each
    takes about 25 s."""
    both, model = _converted(untrained, request.node.name)
    rng = np.random.default_rng(0)
    for n in (1, 2, 50, 384, 600):
        frames = rng.random((n, 543, 3), dtype=np.float32)
        frames[: n // 2, 522:543] = np.nan
        with torch.no_grad():
            want = both(torch.from_numpy(frames)).numpy()
        assert want.shape == (24,) and float(np.max(np.abs(model(frames) - want))) <= FP32_MAX_ABS, n


# Test name -> its untrained model, converted by the `untrained` fixture's worker (built after
# torch.manual_seed(0)).
UNTRAINED: dict[str, Callable[[], torch.nn.Module]] = {
    "test_the_baseline_width_exports_too": lambda: _one(recipe_config("full"), 250),
    "test_the_graph_model_exports_with_parity": _graph_model,
    "test_the_winner_recipe_exports_with_parity": lambda: _one(recipe_config("full", recipe="winner"), 250),
    **{f"test_transformer_options_export_with_parity[variant{i}]": partial(_transformer, v)
       for i, v in enumerate(TRANSFORMER_VARIANTS)},
    "test_feature_options_and_ensemble_rules_export_with_parity": _feature_options,
}
