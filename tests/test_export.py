"""End to end with the real converters: trained folds -> ONNX -> onnx2tf -> TFLite, run by the
TFLite interpreter the way the competition calls it, compared with the PyTorch ensemble."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ablate.data import kaggle
from ablate.data import landmarks as lm

pytest.importorskip("onnx2tf", reason="the export extra is not installed (pip install -e '.[export]')")
pytest.importorskip("ai_edge_litert", reason="the export extra is not installed (pip install -e '.[export]')")

from ablate.export import cases as cs  # noqa: E402
from ablate.export.check import FP32_MAX_ABS, TFLiteModel  # noqa: E402
from ablate.export.ensemble import Ensemble  # noqa: E402
from ablate.spaces import recipe_config  # noqa: E402

# the real competition files (conftest's `sample` fixture is per test; this is for the module fixture)
SAMPLE = Path(os.environ.get("ABLATE_SAMPLE", Path(__file__).resolve().parents[1].parent / "shared" / "data"
                             / "asl-signs-sample"))

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning",
                                         "ignore::DeprecationWarning"), pytest.mark.timeout(900)]


def _to_tflite_fp32(module: torch.nn.Module, out: Path) -> Path:
    """PyTorch -> ONNX -> onnx2tf -> TFLite fp32 into the folder `out`, as the export does it."""
    from ablate.export import convert

    return convert.to_tflite_files(module, out, ["fp32"], out / "convert.log")["fp32"]


@pytest.fixture(scope="module")
def exported(synth_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from ablate.data.cache import Cache
    from ablate.export.build import export_and_check, torch_reference
    from ablate.final.folds import check_or_claim, load_folds, train_all

    cfg = recipe_config("smoke").replace(epochs=2, amp="off")  # fp32 training: its numbers are comparable
    data = Cache(synth_cache)
    out = tmp_path_factory.mktemp("final")
    check_or_claim(out, cfg, data, {})
    train_all(cfg, data, out)
    summary = export_and_check(cfg, data, out, check_files=[SAMPLE] if SAMPLE.is_dir() else [])
    from ablate.export.build import output_map

    _, index, _ = output_map(data)
    ensemble = Ensemble([p for fold in load_folds(cfg, data.num_classes, out) for p in fold], out_index=index).eval()
    return {"summary": summary, "out": out, "data": data, "reference": torch_reference(ensemble),
            "ensemble": ensemble, "config": cfg}


def test_every_target_holds_and_the_deliverable_is_written(exported: dict[str, Any]) -> None:
    s, out = exported["summary"], exported["out"]
    assert s["broken"] == []
    assert (out / "model.tflite").is_file() and (out / "model_fp32.tflite").is_file()
    assert s["parity"]["fp32"]["max_abs"] <= FP32_MAX_ABS and s["parity"]["fp32"]["argmax_agreement"] == 1.0
    assert s["parity"]["tests"] >= 207 and s["parity"]["fp16"]["argmax_agreement"] >= 0.995
    if SAMPLE.is_dir():  # the real files were part of the parity checks
        assert sorted(s["parity"]["files"]) == ["16069/100015657.parquet", "unlabeled/1003700302.parquet",
                                                "unlabeled/1006440534.parquet"]
    assert 0 < s["size_mb"]["fp16"] < s["size_mb"]["fp32"]
    assert 0 < s["latency_ms"]["fp16_1t"]["mean_ms"] < 100


def test_signature_and_shapes_are_the_competitions(exported: dict[str, Any]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(exported["out"] / "model.tflite"))
    assert it.get_signature_list() == {"serving_default": {"inputs": ["inputs"], "outputs": ["outputs"]}}
    runner = it.get_signature_runner("serving_default")
    (inp,) = runner.get_input_details().values()
    assert list(inp["shape_signature"]) == [-1, 543, 3] and inp["dtype"] == np.float32
    for n in (1, 7, 384, 700):
        y = runner(inputs=np.random.default_rng(n).random((n, 543, 3), dtype=np.float32))["outputs"]
        assert y.shape == (250,) and y.dtype == np.float32
        assert y.sum() == pytest.approx(1.0, abs=1e-3)  # fp16 weights: the sum is off by ~2e-4


def _cases(exported: dict[str, Any], sample: Path) -> list[tuple[str, np.ndarray]]:
    files = sorted(sample.glob("*/**/*.parquet"))
    assert len(files) == 3
    return cs.edge_cases(cs.median_sequence(exported["data"])) + cs.file_cases(files)


@pytest.mark.parametrize("variant", ["fp32", "fp16"])
def test_parity_on_edge_lengths_missing_hands_and_real_files(exported: dict[str, Any], sample: Path,
                                                             variant: str) -> None:
    name = "model_fp32.tflite" if variant == "fp32" else "model.tflite"
    model = TFLiteModel(exported["out"] / name)
    lengths = set()
    for label, frames in _cases(exported, sample):
        lengths.add(len(frames))
        want, got = exported["reference"](frames), model(frames)
        assert int(np.argmax(got)) == int(np.argmax(want)), label
        if variant == "fp32":
            assert float(np.max(np.abs(got - want))) <= FP32_MAX_ABS, label
    assert {1, 2, 3, 19, 105, 384, 600} <= lengths  # 3, 19, 105: the real files


def test_the_output_order_is_the_competitions_sign_map(exported: dict[str, Any], sample: Path) -> None:
    written = json.loads((exported["out"] / kaggle.SIGN_MAP).read_text())
    assert written == kaggle.read_sign_map(sample)  # the official 250-sign map, same indices
    data = exported["data"]
    frames = np.array(data.sequence(0))
    probs = exported["reference"](frames)
    absent = [i for s, i in written.items() if s not in data.sign_map]
    assert len(absent) == 250 - data.num_classes and np.all(probs[absent] == 0)
    ens = exported["ensemble"]
    raw = Ensemble(list(_parts(ens))).eval()  # the data's own class order
    with torch.no_grad():
        own = raw(torch.from_numpy(frames)).numpy()
    for sign, k in data.sign_map.items():  # each class lands in its sign's competition slot
        assert probs[written[sign]] == own[k]


def test_predict_prints_the_top_signs_of_real_files(exported: dict[str, Any], sample: Path, capsys: Any) -> None:
    from ablate.cli import main

    files = [str(p) for p in sorted(sample.glob("*/**/*.parquet"))]
    assert main(["predict", str(exported["out"] / "model.tflite"), *files, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    signs = set(kaggle.read_sign_map(sample))
    for r in results:
        assert len(r["top"]) == 5 and {t["sign"] for t in r["top"]} <= signs
        ps = [t["p"] for t in r["top"]]
        assert ps == sorted(ps, reverse=True)
    assert [r["frames"] for r in results] == [105, 19, 3]
    assert main(["predict", str(exported["out"] / "model.tflite"), files[0]]) == 0
    assert capsys.readouterr().out.startswith(f"{files[0]} (105 frames): ")


def test_predict_rejects_bad_input_in_one_line(exported: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    from ablate.cli import main

    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"not a model")
    (tmp_path / kaggle.SIGN_MAP).write_text(json.dumps({"a": 0}))
    assert main(["predict", str(bogus), "x.parquet"]) == 2
    err = capsys.readouterr().err
    assert "not a usable TFLite model" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.parquet"
    bad.write_text("nope")
    assert main(["predict", str(exported["out"] / "model.tflite"), str(bad)]) == 2
    assert "cannot read" in capsys.readouterr().out


def test_hflip_tta_averages_the_mirrored_sequence(exported: dict[str, Any]) -> None:
    ens = exported["ensemble"]
    tta = Ensemble(list(_parts(ens)), tta="hflip", out_index=ens.out_index.tolist()).eval()
    frames = np.array(exported["data"].sequence(3))
    with torch.no_grad():
        plain = ens(torch.from_numpy(frames))
        mirrored = ens(torch.from_numpy(lm.mirror(frames)))
        both = tta(torch.from_numpy(frames))
    torch.testing.assert_close(both, (plain + mirrored) / 2, atol=1e-6, rtol=0)


def _parts(ens: Ensemble) -> Any:
    from ablate.parts import Parts

    for model, head in zip(ens.models, ens.heads):
        yield Parts(ens.features, model, head)


def test_int8_is_smaller_and_gated_like_fp16(synth_cache: Path, tmp_path: Path) -> None:
    """--quantize int8: the dynamic-range int8 model is converted, checked against PyTorch with the
    fp16 gate, and each fold's own int8 model is compared with its fp32 twin on that fold's held-out
    sequences. This barely trained model's probabilities are nearly tied, so int8 flips some argmaxes
    (deterministically, on the CPU): the gate must refuse it, and write no deliverable."""
    from ablate.data.cache import Cache
    from ablate.export.build import export_and_check
    from ablate.final.folds import check_or_claim, train_all
    from ablate.report.export_html import export_section

    cfg = recipe_config("smoke").replace(epochs=2, amp="off", folds=2)
    data = Cache(synth_cache)
    check_or_claim(tmp_path, cfg, data, {})
    train_all(cfg, data, tmp_path)
    s = export_and_check(cfg, data, tmp_path, quantize="int8")
    assert s["precision"] == "int8" and s["size_mb"]["int8"] < s["size_mb"]["fp16"] < s["size_mb"]["fp32"]
    agreement = s["parity"]["int8"]["argmax_agreement"]
    assert s["broken"] == [f"int8 parity: argmax agreement {agreement:.2%} < 99.5%"] and agreement < 0.995
    assert s["deliverable"] is None and not (tmp_path / "model.tflite").exists()
    assert s["parity"]["fp16"]["argmax_agreement"] >= 0.995 and s["latency_ms"]["int8_1t"]["threads"] == 1
    q = s["int8_oof"]
    assert q["sequences"] == len(data) and 0 <= q["predictions_differ"] <= q["sequences"]
    assert q["difference"] == pytest.approx(q["accuracy_int8"] - q["accuracy_fp32"])
    html = export_section({"export": s})
    assert "int8 (the deliverable)" in html and "held-out sequences" in html


def test_the_export_computes_what_training_validated(exported: dict[str, Any]) -> None:
    """Fold k's model in the exported graph gives, on fold k's held-out sequences, the probabilities
    that training recorded for them (features in the graph = features in the data pipeline)."""
    data, cfg, ens = exported["data"], exported["config"], exported["ensemble"]
    parts = list(_parts(ens))
    for k in (0, 3):
        run = Ensemble([parts[k]]).eval()
        with np.load(exported["out"] / "folds" / f"fold{k}.oof.npz") as z:
            indices, probs = z["indices"], z["probs"]
        for i, p in list(zip(indices, probs))[:10]:
            with torch.no_grad():
                got = run(torch.from_numpy(np.array(data.sequence(int(i))))).numpy()
            np.testing.assert_allclose(got, p, atol=2e-5, rtol=0)
    assert cfg.folds == len(parts)


def test_a_failed_export_keeps_the_earlier_deliverable(exported: dict[str, Any], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from ablate.export import build, convert
    from conftest import tree_state

    out = tmp_path / "final"  # a copy: the failed run rewrites export/ (its log), which others may read
    shutil.copytree(exported["out"], out)
    kept = [out / "model.tflite", out / "model_fp32.tflite", out / "sign_to_prediction_index_map.json", out / build.DELIVERED]
    before = tree_state(*kept)
    assert len(before) == 4

    def fails(*a: Any, **k: Any) -> None:
        raise convert.ExportError("forced by the test")

    monkeypatch.setattr(convert, "to_onnx", fails)
    with pytest.raises(convert.ExportError, match="forced"):
        build.export_and_check(exported["config"], exported["data"], out)
    assert tree_state(*kept) == before  # the earlier run's deliverable is intact
    assert build.earlier_deliverable(out).startswith(f"{out / 'model.tflite'} is still the one written by the run of 20")


def test_hflip_tta_exports_with_parity(exported: dict[str, Any], tmp_path: Path) -> None:
    from ablate.export.build import torch_reference

    ens = exported["ensemble"]
    tta = Ensemble(list(_parts(ens))[:1], tta="hflip", out_index=ens.out_index.tolist()).eval()
    model = TFLiteModel(_to_tflite_fp32(tta, tmp_path))
    reference = torch_reference(tta)
    for label, frames in cs.edge_cases(cs.median_sequence(exported["data"])):
        assert float(np.max(np.abs(model(frames) - reference(frames)))) <= FP32_MAX_ABS, label


def test_the_export_writes_attention_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training runs PyTorch's fused attention; the exported graph must get it written out (what
    onnx2tf converts), also where the exporter does not say that it is exporting."""
    from ablate.export import convert
    from ablate.parts import build_parts

    def fused(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("the fused attention kernel reached the export")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", fused)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: False)
    ens = Ensemble([build_parts(recipe_config("smoke"), 12)]).eval()
    with pytest.raises(AssertionError, match="fused attention"):
        ens(torch.rand(5, 543, 3))  # outside the export: the fused kernel
    assert convert.to_onnx(ens, tmp_path / "m.onnx", tmp_path / "convert.log").is_file()
