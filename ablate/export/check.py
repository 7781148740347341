"""Does the exported file work, agree with PyTorch, and fit the competition's limits?

Runs the .tflite through the TFLite interpreter (ai-edge-litert) the way the competition's harness
calls it: `get_signature_runner("serving_default")(inputs=frames)["outputs"]`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The competition's calling convention: runner = get_signature_runner("serving_default");
# runner(inputs=frames)["outputs"]
INPUT, OUTPUT, SIGNATURE = "inputs", "outputs", "serving_default"

# Competition limits (Kaggle "Google - Isolated Sign Language Recognition", evaluation page):
SIZE_LIMIT_MB = 40.0  # the submitted model file, in MB = 10^6 bytes (the stricter reading)
LATENCY_LIMIT_MS = 100.0  # mean inference time per sequence, one CPU thread
# Our parity targets (issue: finalize and export)
FP32_MAX_ABS = 1e-4  # max |p_tflite - p_torch| over every class and test sequence
FP16_MIN_AGREEMENT = 0.995  # share of sequences with the same argmax
FP16_MIN_SEQUENCES = 200
INT8_MIN_AGREEMENT = 0.995  # the same gate for the int8 (dynamic range) model


class TFLiteModel:
    """One interpreter; call it with float32 [T, 543, 3] to get the probabilities."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise ValueError(f"{path}: no {SIGNATURE!r} signature (has {sorted(signatures)})")
        self.signature = signatures[SIGNATURE]
        self._run = self.interpreter.get_signature_runner(SIGNATURE)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return self._run(**{INPUT: np.ascontiguousarray(frames, dtype=np.float32)})[OUTPUT]


@dataclass
class Parity:
    n: int
    max_abs: float
    argmax_agreement: float
    worst_case: str  # the test sequence with the largest difference
    disagreements: list[str] = field(default_factory=list)


def parity(cases: Sequence[tuple[str, np.ndarray]], reference: Callable[[np.ndarray], np.ndarray],
           model: Callable[[np.ndarray], np.ndarray]) -> Parity:
    """Compare two probability functions on named sequences."""
    worst, worst_name, agree, bad = -1.0, "", 0, []
    for name, frames in cases:
        a, b = reference(frames), model(frames)
        if a.shape != b.shape:
            raise ValueError(f"{name}: output shape {b.shape}, expected {a.shape}")
        finite = np.all(np.isfinite(a)) and np.all(np.isfinite(b))
        d = float(np.max(np.abs(a - b))) if finite else float("inf")
        if d > worst:
            worst, worst_name = d, name
        if int(np.argmax(a)) == int(np.argmax(b)):
            agree += 1
        else:
            bad.append(name)
    return Parity(len(cases), worst, agree / max(1, len(cases)), worst_name, bad[:20])


@dataclass
class Latency:
    threads: int
    mean_ms: float  # over the realistic lengths
    p95_ms: float
    max_len_ms: float  # one sequence at the crop length (the slowest realistic case)
    n: int
    lengths_median: float


def latency(model: Callable[[np.ndarray], np.ndarray], sequences: Sequence[np.ndarray], longest: np.ndarray,
            threads: int) -> Latency:
    """Mean wall time of one call per sequence, as the competition's harness calls it: each call
    resizes the input to the sequence's length. One warm-up call first (loading, first allocation)."""
    model(sequences[0])
    times = []
    for frames in sequences:
        t = time.perf_counter()
        model(frames)
        times.append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter()
    model(longest)
    top = (time.perf_counter() - t) * 1e3
    times.sort()
    return Latency(threads, statistics.fmean(times), times[int(0.95 * (len(times) - 1))], top, len(times),
                   float(statistics.median(len(s) for s in sequences)))


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def verdicts(fp32: Parity, fp16: Parity, size_mb: float, lat: Latency, deliverable: str,
             int8: Parity | None = None) -> list[str]:
    """Every broken target, in words; empty when all hold. size_mb and lat are the deliverable's."""
    broken = []
    if fp32.max_abs > FP32_MAX_ABS:
        broken.append(f"fp32 parity: max |difference| {fp32.max_abs:.2e} > {FP32_MAX_ABS:.0e} (worst: {fp32.worst_case})")
    if fp32.argmax_agreement < 1.0:
        broken.append(f"fp32 parity: argmax differs on {', '.join(fp32.disagreements)}")
    if fp16.n < FP16_MIN_SEQUENCES:
        broken.append(f"fp16 parity: only {fp16.n} test sequences, the target needs {FP16_MIN_SEQUENCES}")
    if fp16.argmax_agreement < FP16_MIN_AGREEMENT:
        broken.append(f"fp16 parity: argmax agreement {fp16.argmax_agreement:.2%} < {FP16_MIN_AGREEMENT:.1%}")
    if int8 is not None and int8.argmax_agreement < INT8_MIN_AGREEMENT:
        broken.append(f"int8 parity: argmax agreement {int8.argmax_agreement:.2%} < {INT8_MIN_AGREEMENT:.1%}")
    if size_mb > SIZE_LIMIT_MB:
        broken.append(f"size: {deliverable} is {size_mb:.1f} MB > the competition's {SIZE_LIMIT_MB:.0f} MB")
    if lat.mean_ms > LATENCY_LIMIT_MS:
        broken.append(f"latency: {lat.mean_ms:.1f} ms per sequence on 1 thread > the competition's {LATENCY_LIMIT_MS:.0f} ms")
    return broken
