"""The `ablate finalize` page: status, recipe, provenance, accuracy and export numbers, escaped user text, the index link."""

from __future__ import annotations

import copy
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ablate.report.final_html import write_final_page
from ablate.report.writer import write_index

HOSTILE = "<script>alert(1)</script>"


def _latency(mean: float, threads: int) -> dict[str, Any]:
    return {"threads": threads, "mean_ms": mean, "p95_ms": mean * 1.5, "max_len_ms": 7.25, "n": 100,
            "lengths_median": 35.0}


@pytest.fixture()
def summary() -> dict[str, Any]:
    return {
        "preset": "quick", "study_preset": "quick", "storage": "the default journal",
        "config": {"features": {"name": "seed828", "params": {"max_len": 384}},
                   "model": {"name": "transformer", "params": {"width": 64}}, "loss": {"name": "ce", "params": {}},
                   "optimizer": {"name": "ranger", "params": {"lr": 0.003}},
                   "schedule": {"name": "warmup_cosine", "params": {}},
                   "augmentations": [{"name": "shift", "params": {}}, {"name": "mirror", "params": {}}],
                   "epochs": 8, "batch_size": 32, "grad_clip": 1.0, "early_stopping": 0, "amp": "auto",
                   "device": "auto", "seed": 0, "folds": 5, "fold_seed": 0, "fold_kind": "grouped",
                   "max_train_batches": 0},
        "choices": [{
            "space": "losses", "study": "losses-quick", "mode": "ablation", "baseline": "subcenter_arcface",
            "chosen": "ce", "reason": "ce is better than subcenter_arcface (mean 0.4180, diff +0.1500, P(better) 0.988)",
            "changes": {"loss": {"name": "ce", "params": {}}},
            "evidence": [
                {"arm": "subcenter_arcface", "mean": 0.268, "ci_low": 0.2, "ci_high": 0.33, "diff": 0.0,
                 "diff_low": None, "diff_high": None, "p_worse": None, "p_equivalent": None, "p_better": None,
                 "mde": None, "verdict": "baseline", "state": "COMPLETE"},
                {"arm": "ce", "mean": 0.418, "ci_low": 0.35, "ci_high": 0.48, "diff": 0.15, "diff_low": 0.02,
                 "diff_high": 0.28, "p_worse": 0.001, "p_equivalent": 0.011, "p_better": 0.988, "mde": 0.09,
                 "verdict": "better", "state": "COMPLETE"}],
            "fingerprint": "4897"}],
        "warnings": ["losses-quick ran on other data"], "versions": {"python": "3.11.2", "torch": "2.13.0"},
        "git": "9be87ca-dirty",
        "data": {"fingerprint": "48974462575a9398", "cache": "/x/.ablate/cache/abc", "sequences": 720, "signs": 12},
        "training": {"folds": [{"fold": k, "acc": 0.8, "seconds": 40.1 + k, "resumed": k == 1} for k in range(5)],
                     "oof": {"folds": [{"fold": k, "acc": 0.75 + 0.01 * k, "n": 144} for k in range(5)],
                             "pooled": 0.77083, "n": 720}},
        "export": {
            "tta": "none", "outputs": 250, "warnings": ["the data has 12 of the competition's 250 signs"],
            "seconds": {"PyTorch -> ONNX": 4.1, "ONNX -> SavedModel (onnx2tf)": 130.0},
            "parity": {"fp32": {"n": 207, "max_abs": 6.5e-07, "argmax_agreement": 1.0, "worst_case": "T=2",
                                "disagreements": []},
                       "fp16": {"n": 207, "max_abs": 4.7e-4, "argmax_agreement": 206 / 207, "worst_case": "T=23",
                                "disagreements": ["sequence 1 (T=20)"]},
                       "tests": 207},
            "size_mb": {"fp16": 0.3, "fp32": 0.5123, "limit": 40.0},
            "latency_ms": {"fp16_1t": _latency(1.234, 1), "fp16_2t": _latency(0.871, 2),
                           "fp32_1t": _latency(2.5, 1), "limit": 100.0},
            "targets": {"fp32_max_abs": 0.0001, "fp16_agreement": 0.995, "fp16_sequences": 200},
            "oof_accuracy_by_tta": None, "crop": 384, "deliverable": "final/model.tflite", "broken": []},
        "seconds": 300.2,
    }


def _text(page: str) -> str:
    """The visible text, tags dropped and entities decoded, whitespace collapsed."""
    body = re.sub(r"<script.*?</script>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def _row(page: str, table_id: str, first_cell: str) -> list[str]:
    """The decoded cells of the row of table `table_id` whose first cell is first_cell."""
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', page, flags=re.S)
    assert table, table_id
    for tr in re.findall(r"<tr>(.*?)</tr>", table.group(1), flags=re.S):
        cells = [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split())
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in {table_id}")


def test_page_is_written_with_plotly_beside_it(tmp_path: Path, summary: dict[str, Any]) -> None:
    path = write_final_page(summary, tmp_path / "reports")
    assert path == tmp_path / "reports" / "final.html"
    assert (tmp_path / "reports" / "plotly.min.js").stat().st_size > 100_000
    page = path.read_text()
    assert '<script src="plotly.min.js"></script>' in page
    assert not list((tmp_path / "reports").glob(".*.tmp"))
    figs = json.loads(re.search(r'<script id="figures" type="application/json">(.*?)</script>', page, re.S).group(1))
    bars = figs["oof"]["data"][0]
    assert bars["y"] == pytest.approx([0.75, 0.76, 0.77, 0.78, 0.79])
    assert figs["oof"]["layout"]["shapes"][0]["y0"] == pytest.approx(0.77083)


def test_sections_in_order_with_the_numbers(tmp_path: Path, summary: dict[str, Any]) -> None:
    page = write_final_page(summary, tmp_path).read_text()
    text = _text(page)
    assert "ready: final/model.tflite" in text and "NOT READY" not in text
    order = [page.index(f'id="{k}"') for k in ("status", "recipe", "provenance", "accuracy", "export", "warnings",
                                                  "setup")]
    assert order == sorted(order)
    # recipe
    assert "optimizer ranger (lr 0.003)" in text and "augmentations shift, mirror" in text
    assert "features seed828 (max_len 384)" in text and "fold_seed 0" in text
    # provenance: the chosen row is marked and carries its numbers
    chosen = re.search(r'<tr class="chosen"[^>]*>(.*?)</tr>', page, re.S).group(1)
    assert ">ce" in chosen and "0.4180 [0.3500, 0.4800]" in chosen and "+0.1500 [+0.0200, +0.2800]" in chosen
    assert "0.001 / 0.011 / 0.988" in chosen and page.count('class="chosen"') == 1
    assert "ce is better than subcenter_arcface" in text and "loss = ce" in text
    # accuracy
    assert "Pooled out-of-fold accuracy: 0.7708 over 720 sequences" in text
    assert _row(page, "oof-table", "3") == ["3", "0.7800", "144", "43.1 s", "no"]
    assert _row(page, "oof-table", "1")[-1] == "yes"
    # export
    fp32, fp16 = _row(page, "parity", "fp32"), _row(page, "parity", "fp16")
    assert fp32[1:6] == ["207", "6.50e-07", "100.00%", "T=2", "none"] and fp32[-1] == "pass"
    assert fp16[1:6] == ["207", "4.70e-04", "99.52%", "T=23", "sequence 1 (T=20)"] and fp16[-1] == "pass"
    assert "99.5%" in fp16[6] and "200" in fp16[6] and "1e-04" in fp32[6]
    assert _row(page, "size", "fp16 (the deliverable)") == ["fp16 (the deliverable)", "0.30", "40", "pass"]
    assert _row(page, "size", "fp32")[1] == "0.51"
    assert _row(page, "latency", "fp16 (the deliverable)") == [
        "fp16 (the deliverable)", "1", "1.23", "1.85", "7.25", "100", "35", "pass"]
    assert _row(page, "latency", "fp16") == ["fp16", "2", "0.87", "1.31", "7.25", "100", "35", "–"]  # not judged
    assert _row(page, "latency", "fp32")[2] == "2.50" and _row(page, "latency", "fp32")[-1] == "pass"
    assert _row(page, "steps", "ONNX -> SavedModel (onnx2tf)")[1] == "2.2 min"
    assert "the data has 12 of the competition's 250 signs" in text
    # setup and warnings
    assert "losses-quick ran on other data" in text and "48974462575a9398" in text and "9be87ca-dirty" in text
    assert "torch 2.13.0" in text and "5.0 min" in text


def test_failed_targets_fail_and_not_ready(tmp_path: Path, summary: dict[str, Any]) -> None:
    exp = summary["export"]
    exp["parity"]["fp32"]["max_abs"] = float("inf")  # a non-finite TFLite output
    exp["parity"]["fp16"]["argmax_agreement"] = 0.9
    exp["size_mb"]["fp16"] = 41.0
    exp["latency_ms"]["fp16_1t"]["mean_ms"] = 150.0
    exp["deliverable"] = None
    exp["broken"] = ["fp32 parity: max |difference| inf > 1e-04 (worst: T=0)", "latency: 150.0 ms > 100 ms"]
    page = write_final_page(summary, tmp_path).read_text()
    text = _text(page)
    assert "NOT READY" in text and "ready:" not in text
    for b in exp["broken"]:
        assert html.escape(b) in page
    assert _row(page, "parity", "fp32")[2] == "–" and _row(page, "parity", "fp32")[-1] == "fail"
    assert _row(page, "parity", "fp16")[-1] == "fail"
    assert _row(page, "size", "fp16 (the deliverable)")[-1] == "fail" and _row(page, "size", "fp32")[-1] == "pass"
    assert _row(page, "latency", "fp16 (the deliverable)")[-1] == "fail"


def test_hostile_strings_only_escaped(tmp_path: Path, summary: dict[str, Any]) -> None:
    ch = summary["choices"][0]
    ch["chosen"] = ch["evidence"][1]["arm"] = HOSTILE
    ch["study"] = ch["space"] = ch["reason"] = HOSTILE
    summary["warnings"] = [HOSTILE]
    summary["data"]["cache"] = HOSTILE
    summary["config"]["model"]["name"] = HOSTILE
    summary["export"]["deliverable"] = HOSTILE
    summary["export"]["parity"]["fp16"]["disagreements"] = [HOSTILE]
    summary["export"]["seconds"] = {HOSTILE: 1.0}
    summary["versions"][HOSTILE] = HOSTILE
    page = write_final_page(summary, tmp_path).read_text()
    assert HOSTILE not in page and "alert(1)" in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10
    # the chosen row is still found by name
    assert 'class="chosen"' in page


def test_without_export_and_without_choices(tmp_path: Path, summary: dict[str, Any]) -> None:
    del summary["export"]
    summary["choices"] = []
    summary["training"]["oof"]["pooled"] = float("nan")
    page = write_final_page(summary, tmp_path).read_text()
    text = _text(page)
    assert "not exported" in text and "NOT READY" not in text and 'id="parity"' not in page
    assert "No study was used: the base recipe as it is." in text
    assert "Pooled out-of-fold accuracy: – over 720 sequences" in text


def test_sparse_summary_renders(tmp_path: Path) -> None:
    """Only what finalize writes before training: no training, no export, no numbers."""
    page = write_final_page({"config": {}, "choices": [], "warnings": []}, tmp_path).read_text()
    assert "<h1>Final model</h1>" in page and "not exported" in page


def test_index_links_final_page_only_when_it_exists(tmp_path: Path, summary: dict[str, Any]) -> None:
    index = write_index(tmp_path).read_text()
    assert "final.html" not in index
    write_final_page(copy.deepcopy(summary), tmp_path)  # refreshes the index itself
    assert 'href="final.html"' in (tmp_path / "index.html").read_text()
    (tmp_path / "final.html").unlink()
    assert "final.html" not in write_index(tmp_path).read_text()
