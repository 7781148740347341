"""`ablate predict MODEL.tflite FILE.parquet...`: the top signs of each file, as the competition's
harness would run the model (one sequence per call, float32 [n_frames, 543, 3] with NaNs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ablate.data import kaggle
from ablate.errors import UserError, first_line


def find_sign_map(model: Path, given: str | None) -> tuple[dict[str, int], Path]:
    path = Path(given) if given else model.parent / kaggle.SIGN_MAP
    if not path.is_file():
        raise UserError(f"{path}: sign map not found (expected {kaggle.SIGN_MAP} beside the model, or pass --sign-map)")
    return kaggle.read_sign_map_file(path), path


def predict(model_path: Path, files: list[Path], sign_map_path: str | None = None, top: int = 5,
            threads: int = 1) -> list[dict[str, Any]]:
    """Top-k (sign, probability) for each file; a file that cannot be read is reported, not fatal."""
    from ablate.export.check import TFLiteModel

    try:
        import ai_edge_litert  # noqa: F401  (the TFLite runtime)
    except ImportError:
        raise UserError("predict needs ai-edge-litert: pip install -c constraints.txt -e '.[export]'") from None
    if not model_path.is_file():
        raise UserError(f"{model_path}: no such model file")
    sign_map, map_path = find_sign_map(model_path, sign_map_path)
    names = {i: s for s, i in sign_map.items()}
    try:
        model = TFLiteModel(model_path, threads=threads)
    except ValueError as e:  # a file that is not a TFLite flatbuffer, or one without the signature
        raise UserError(f"{model_path}: not a usable TFLite model ({first_line(e)})") from None
    out = []
    for f in files:
        try:
            frames = kaggle.read_landmarks(f)
        except kaggle.BadFile as e:
            out.append({"file": str(f), "error": str(e)})
            continue
        probs = model(frames)
        if probs.shape != (len(sign_map),):
            raise UserError(f"{model_path}: outputs {probs.shape[0]} classes but {map_path} has {len(sign_map)} signs")
        best = np.argsort(-probs, kind="stable")[:top]
        out.append({"file": str(f), "frames": int(len(frames)),
                    "top": [{"sign": names.get(int(i), f"#{int(i)}"), "p": float(probs[i])} for i in best]})
    return out
