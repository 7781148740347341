"""Each arm's inference cost: the parameter count and the single-sequence latency of the whole
exported model (features, encoder, head), as the competition runs it: one sequence per call, one
CPU thread.

`ablate run` times every complete trial once its workers are done, one model after another in one
process, so that no training runs beside the timing and every arm is timed under the same
conditions (timed inside the workers, beside the other workers' training on a 2-core machine,
the arms' latencies differed by up to 40% at random). The model is built from the
trial's resolved configuration: the latency depends on the architecture, not on the weights.

The model is exported to ONNX by the deliverable's own exporter (export.convert.to_onnx) and run by
onnxruntime on one thread (intra- and inter-op), on random landmarks at LENGTHS quantiles of the
data's sequence lengths. Each length is called REPEATS times after one warm-up call and its
fastest call is kept (the least disturbed by other work on the machine); the latency is the mean
over the lengths, which is what the competition's mean-per-sequence limit is about.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablate.errors import first_line

SPEED_AXES = ("model", "features", "recipe")  # the axes whose arms change the inference graph
LENGTHS = 12  # quantiles of the data's lengths that are timed
REPEATS = 10  # calls per length after the warm-up; the fastest counts


@dataclass
class Speed:
    parameters: int | None  # of the encoder and the head (feature sets have none); None: not built
    latency_ms: float | None  # mean over the lengths of the fastest call; None: not measured (see note)
    lengths: list[int]
    runtime: str  # "onnxruntime 1.x, 1 thread, CPU"
    load: float | None = None  # the machine's 1-minute load average when it was measured
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def quantile_lengths(lengths: np.ndarray, n: int = LENGTHS) -> list[int]:
    """n lengths at the midpoints of n equal-probability bins of the data's length distribution."""
    qs = (np.arange(n) + 0.5) / n
    return [max(1, int(round(v))) for v in np.quantile(lengths, qs)]


def parameter_count(parts: Any) -> int:
    return int(sum(p.numel() for m in (parts.model, parts.head) for p in m.parameters()))


def measure(parts: Any, lengths: list[int]) -> Speed:
    """Parameter count and latency of `parts` (a copy is exported; the trained parts are untouched)."""
    count = parameter_count(parts)
    try:
        import onnxruntime as ort
    except ImportError:
        return Speed(count, None, lengths, "", note="onnxruntime is not installed (pip install -e '.[onnx]')")
    from ablate.export.ensemble import Ensemble

    runtime = f"onnxruntime {ort.__version__}, 1 thread, CPU"
    try:
        fastest = _time(Ensemble([copy.deepcopy(parts)]).to("cpu").eval(), lengths, ort)
    except Exception as e:  # noqa: BLE001 - a model that does not export or run gets no latency; the trial goes on
        return Speed(count, None, lengths, runtime, note=f"not timed: {first_line(e, 200)}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return Speed(count, round(float(np.mean(fastest)), 3), lengths, runtime, load)


def _time(model: Any, lengths: list[int], ort: Any) -> list[float]:
    """The fastest of REPEATS calls at each length, in ms (after one warm-up call per length)."""
    from ablate.export.convert import to_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        to_onnx(model, path, Path(tmp) / "export.log")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        rng = np.random.default_rng(0)
        fastest = []
        for n in lengths:
            frames = rng.random((n, 543, 3), dtype=np.float32)
            session.run(None, {name: frames})  # warm-up: first allocation for this length
            times = []
            for _ in range(REPEATS):
                t = time.perf_counter()
                session.run(None, {name: frames})
                times.append((time.perf_counter() - t) * 1e3)
            fastest.append(min(times))
    return fastest


def time_trials(study: Any, data: Any, log: Callable[[str], None]) -> None:
    """Time every complete trial that has no latency yet (model, features and recipe axes), the
    ones standing for the arms first; each result is stored beside its trial (records.set_speed)."""
    from ablate.config import ADDED_KEYS, Config
    from ablate.errors import UserError
    from ablate.parts import build_parts
    from ablate.study import records
    from ablate.study.modes import mode_of

    meta = records.read_meta(study)
    if meta.axis not in SPEED_AXES:
        return
    recs = records.trial_records(study, meta)
    mode, lengths = mode_of(meta.mode), quantile_lengths(data.lengths)
    first = {r.number for r in (mode.representative([x for x in recs if x.arm == a]) for a in meta.arms) if r}
    todo = [r for r in recs if r.state == "COMPLETE" and not r.unfinished and r.speed is None]
    for rep in sorted(todo, key=lambda r: (r.number not in first, r.number)):
        try:
            torch.manual_seed(0)
            config = Config.from_dict({**ADDED_KEYS, **rep.config}, where=f"trial {rep.number}")  # older trials lack new keys
            parts = build_parts(config, data.num_classes)
        except UserError as e:
            cost = Speed(None, None, lengths, "", note=f"not timed: {e}")
        else:
            cost = measure(parts, lengths)
        records.set_speed(study, rep.number, cost.to_json())
        ms = f"{cost.latency_ms:.2f} ms" if cost.latency_ms is not None else cost.note
        log(f"timed {rep.arm} (trial {rep.number}): {cost.parameters or 0:,} parameters, {ms} per sequence")


def pareto(points: dict[str, tuple[float, float]]) -> list[str]:
    """The labels of (accuracy, latency) points that no other point beats on both: at least as
    accurate and at least as fast, and strictly better on one. In order of latency."""
    front = [a for a, (acc, lat) in points.items()
             if not any(o != a and acc2 >= acc and lat2 <= lat and (acc2 > acc or lat2 < lat)
                        for o, (acc2, lat2) in points.items())]
    return sorted(front, key=lambda a: points[a][1])
