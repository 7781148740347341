"""PyTorch -> ONNX -> onnx2tf (SavedModel) -> TFLite with the competition's signature.

TensorFlow, onnx and onnx2tf are imported here, inside the functions, and only here: the CLI and
training never pay for them. What was learned about the converters is in ../shared/EXPORT.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ablate.components._layers import export_form
from ablate.errors import UserError, first_line
from ablate.export.check import INPUT, OUTPUT, SIGNATURE
from ablate.files import atomic_write

EXAMPLE_FRAMES = 40  # the example sequence traced by the exporter; any length works after export


class ExportError(RuntimeError):
    """A converter failed on a graph we built: our bug or a converter limit, not the user's input."""


def to_onnx(module: nn.Module, path: Path, log_path: Path) -> Path:
    """Export with the number of frames as a dynamic axis (dynamo exporter; opset of the exporter)."""
    module = module.eval()
    example = torch.rand(EXAMPLE_FRAMES, 543, 3)
    example[5:9, 468:489] = float("nan")  # a stretch with a missing hand, as in real recordings
    n_frames = torch.export.Dim("n_frames", min=1)
    try:
        with warnings.catch_warnings(), _captured(log_path), export_form():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not ours
            torch.onnx.export(module, (example,), str(path), dynamo=True, input_names=[INPUT],
                              output_names=[OUTPUT], dynamic_shapes={INPUT: {0: n_frames}}, verbose=False)
            _fold_weights(path)
    except Exception as e:
        raise ExportError(f"ONNX export failed: {first_line(e, 300)} (log {log_path})") from e
    return path


def _fold_weights(path: Path) -> None:
    """Fold every computation on weights alone (e.g. a cosine head's l2-normalised class centres).

    The exporter's optimizer leaves constants of more than 8192 inputs unfolded; onnx2tf then
    evaluates such a subgraph to a NumPy array and fails ("Output tensors of a Functional model
    must be the output of a TensorFlow Layer"). That happened at the baseline's width (512) and
    not at width 32, so the limits here are far above any model we build.
    """
    import onnx
    import onnxscript.optimizer

    model = onnx.load(str(path))  # with its external data
    model = onnxscript.optimizer.optimize(model, input_size_limit=1 << 28, output_size_limit=1 << 28)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    onnx.save(model, str(path), save_as_external_data=True, location=data.name)


@contextlib.contextmanager
def _captured(log_path: Path):
    """Send everything written to stdout/stderr, by Python or by C++ (onnxruntime, TensorFlow), to a
    log file: the converters print hundreds of lines that would bury our one-line messages."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _log_tail(log_path: Path, lines: int = 5) -> str:
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])[:500]


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def to_saved_model(onnx_path: Path, out_dir: Path, log_path: Path) -> Path:
    """onnx2tf, keeping the input's [n_frames, 543, 3] layout (no NCW -> NWC transpose).

    The simplifier (onnxsim) is skipped: the dynamo exporter's graph is already folded, and onnx2tf
    would look for the `onnxsim` command on PATH, which a venv's bin/ often is not.
    """
    _quiet_tf()
    try:
        with _captured(log_path):  # importing TensorFlow prints its own banner on stderr
            import onnx2tf
    except ImportError as e:
        raise UserError(f"export needs the 'export' extra (pip install -c constraints.txt -e '.[export]'): {e}") from None
    if out_dir.exists():
        shutil.rmtree(out_dir)
    try:
        with _captured(log_path):
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_path), output_folder_path=str(out_dir),
                keep_shape_absolutely_input_names=[INPUT], output_signaturedefs=True,
                not_use_onnxsim=True, copy_onnx_input_output_names_to_tflite=True, verbosity="error",
            )
    except Exception as e:
        raise ExportError(f"onnx2tf failed on {onnx_path.name}: {str(e)[:300]} (log {log_path}: {_log_tail(log_path)})") from e
    return out_dir


PRECISIONS = ("fp32", "fp16", "int8")


def to_tflite(saved_model: Path, path: Path, precision: str, log_path: Path) -> Path:
    """Convert the SavedModel with a `serving_default` signature: input `inputs`, output `outputs`.

    precision: fp32; fp16 stores the weights as float16 (half the size; CPU kernels still compute
    in float32); int8 is TFLite's dynamic-range quantization: weights stored as int8 (a quarter of
    the size), activations quantized on the fly where a kernel supports it, no calibration data.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    _quiet_tf()
    with _captured(log_path):
        import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    inner = loaded.signatures[SIGNATURE]
    (in_name,) = inner.structured_input_signature[1].keys()

    # Re-wrap so the names are ours whatever onnx2tf called them.
    @tf.function(input_signature=[tf.TensorSpec([None, 543, 3], tf.float32, name=INPUT)])
    def serve(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        (out,) = inner(**{in_name: inputs}).values()
        return {OUTPUT: out}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], loaded)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops: the runtime lacks them
    if precision != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # alone (no representative data): dynamic range
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        with _captured(log_path):
            blob = converter.convert()
    except Exception as e:
        raise ExportError(f"TFLite conversion failed: {str(e).strip().splitlines()[-1][:300]} (log {log_path})") from e
    return atomic_write(path, blob)


def to_tflite_files(module: nn.Module, folder: Path, precisions: Sequence[str], log_path: Path,
                    step: Callable[..., Any] | None = None) -> dict[str, Path]:
    """The whole chain into `folder`: model.onnx, saved_model/, then model_<precision>.tflite for
    each of `precisions` (by path). `step(name, fn, *args)` runs each stage (the export times
    them); by default they just run."""
    run = step or (lambda name, fn, *a: fn(*a))
    run("PyTorch -> ONNX", to_onnx, module, folder / "model.onnx", log_path)
    run("ONNX -> SavedModel (onnx2tf)", to_saved_model, folder / "model.onnx", folder / "saved_model", log_path)
    return {p: run(f"SavedModel -> TFLite {p}", to_tflite, folder / "saved_model", folder / f"model_{p}.tflite", p,
                   log_path) for p in precisions}
