"""The `ablate finalize` page's export section (parity, size and latency per precision of the
converted model) and the formatting helpers the page shares with it."""

from __future__ import annotations

import math
from typing import Any

from ablate.report.charts import esc
from ablate.report.fmt import DASH, acc, duration
from ablate.report.setup_html import _kv_table

GREEN, RED = "#1a7f37", "#c62828"  # the verdict colours of the study report


def _finite(v: Any) -> float | None:
    """A number to format, or None where the summary has none (missing, null, nan, inf, not a number)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _fmt(v: Any, spec: str, suffix: str = "") -> str:
    x = _finite(v)
    return DASH if x is None else f"{x:{spec}}{suffix}"


def _check(ok: bool | None) -> str:
    """pass / fail in colour and in words; a dash where there is nothing to judge against."""
    if ok is None:
        return DASH
    return f'<span class="tag" style="background:{GREEN if ok else RED}">{"pass" if ok else "fail"}</span>'


def _within(v: Any, low: Any = None, high: Any = None) -> bool | None:
    """Whether low <= v <= high (a missing bound is no bound); None when there is nothing to judge.
    A non-finite v (inf: the model gave nan) fails."""
    if v is None or (low is None and high is None):
        return None
    x = _finite(v)
    return x is not None and (low is None or x >= low) and (high is None or x <= high)



def _all(*oks: bool | None) -> bool | None:
    """Every judged check holds; None when none could be judged."""
    judged = [ok for ok in oks if ok is not None]
    return all(judged) if judged else None


def _table(head: list[str], rows: list[list[str]], table_id: str) -> str:
    """Cells are HTML already (callers escape); every cell but the first is right-aligned like numbers."""
    th = "".join(f"<th>{h}</th>" for h in head)
    tr = "".join("<tr>" + "".join(f"<td>{c}</td>" if i == 0 else f'<td class="num">{c}</td>' for i, c in enumerate(r))
                 + "</tr>" for r in rows)
    return f'<table id="{table_id}"><tr>{th}</tr>{tr}</table>'


def _parity_table(exp: dict[str, Any]) -> str:
    parity, t = exp.get("parity") or {}, exp.get("targets") or {}
    p32, p16, p8 = (parity.get(v) or {} for v in PRECISIONS)
    t32, t16, n16 = _finite(t.get("fp32_max_abs")), _finite(t.get("fp16_agreement")), _finite(t.get("fp16_sequences"))
    t8 = _finite(t.get("int8_agreement"))
    targets = {
        "fp32": (f"max |diff| &le; {_fmt(t32, '.0e')}, argmax agreement 100%",
                 _all(_within(p32.get("max_abs"), high=t32), _within(p32.get("argmax_agreement"), low=1.0))),
        "fp16": (f"argmax agreement &ge; {_fmt(t16, '.1%')} over &ge; {_fmt(n16, '.0f')} sequences",
                 _all(_within(p16.get("argmax_agreement"), low=t16), _within(p16.get("n"), low=n16))),
        "int8": (f"argmax agreement &ge; {_fmt(t8, '.1%')}", _within(p8.get("argmax_agreement"), low=t8)),
    }
    rows = []
    for name, p in (("fp32", p32), ("fp16", p16), ("int8", p8)):
        if not p:
            continue
        bad = p.get("disagreements") or []
        rows.append([name, _fmt(p.get("n"), ".0f"), _fmt(p.get("max_abs"), ".2e"),
                     _fmt(p.get("argmax_agreement"), ".2%"), esc(p.get("worst_case", DASH)),
                     esc(", ".join(map(str, bad))) or "none", targets[name][0], _check(targets[name][1])])
    head = ["model", "test sequences", "max |diff| to PyTorch", "argmax agreement", "worst case", "argmax differs on",
            "target", "check"]
    return ("<h3>Parity with PyTorch</h3><p>The same test sequences (edge cases and real ones) through the PyTorch "
            "ensemble and each TFLite file; the difference is in probabilities.</p>" + _table(head, rows, "parity"))


PRECISIONS = ("fp32", "fp16", "int8")


def _label(precision: str, exp: dict[str, Any]) -> str:
    return precision + (" (the deliverable)" if precision == exp.get("precision", "fp16") else "")


def _size_table(exp: dict[str, Any]) -> str:
    size = exp.get("size_mb") or {}
    limit = _finite(size.get("limit"))
    rows = [[_label(key, exp), _fmt(size.get(key), ".2f"), _fmt(limit, ".0f"),
             _check(_within(size.get(key), high=limit))] for key in PRECISIONS if key in size]
    return "<h3>File size</h3>" + _table(["model", "MB", "limit MB", "check"], rows, "size")


def _latency_table(exp: dict[str, Any]) -> str:
    lat = exp.get("latency_ms") or {}
    limit = _finite(lat.get("limit"))
    rows = []
    keys = sorted((k for k in lat if k != "limit"), key=lambda k: (k.split("_")[0] != exp.get("precision", "fp16"), k))
    for key in keys:
        label = _label(key.split("_")[0], exp) if key.endswith("_1t") else key.split("_")[0]
        r = lat.get(key) or {}
        one_thread = r.get("threads") == 1  # the competition's limit is for one CPU thread
        rows.append([label, esc(r.get("threads", DASH)), _fmt(r.get("mean_ms"), ".2f"), _fmt(r.get("p95_ms"), ".2f"),
                     _fmt(r.get("max_len_ms"), ".2f"), _fmt(r.get("n"), ".0f"), _fmt(r.get("lengths_median"), ".0f"),
                     _check(_within(r.get("mean_ms"), high=limit) if one_thread else None)])
    crop = exp.get("crop", 384)  # the feature set's crop: the longest input it keeps
    head = ["model", "threads", "mean ms", "p95 ms", f"ms at {esc(crop)} frames", "calls", "median length (frames)",
            f"mean &le; {_fmt(limit, '.0f')} ms on 1 thread"]
    return ("<h3>Latency</h3><p>Wall time of one call of the TFLite interpreter per sequence, over real "
            "sequence lengths, as the competition's harness calls it (after one warm-up call).</p>"
            + _table(head, rows, "latency"))


def export_section(s: dict[str, Any]) -> str:
    exp = s.get("export")
    if not isinstance(exp, dict):
        return '<h2 id="export">Export</h2><p>Not exported.</p>'
    rows = [("test-time augmentation", esc(exp.get("tta", DASH))), ("outputs (signs)", esc(exp.get("outputs", DASH)))]
    for tta, value in (exp.get("oof_accuracy_by_tta") or {}).items():  # only when TTA was asked for
        rows.append((f"out-of-fold accuracy, TTA {esc(tta)} (fp32 PyTorch)", acc(_finite(value))))
    q = exp.get("int8_oof") or {}
    if q.get("sequences"):
        rows.append(("int8 against fp32 on held-out sequences (TFLite, each fold's own models)",
                     f"{acc(_finite(q.get('accuracy_int8')))} against {acc(_finite(q.get('accuracy_fp32')))}: "
                     f"{_fmt(q.get('difference'), '+.4f')} over {esc(q.get('sequences'))} sequences "
                     f"(at most {esc(q.get('per_fold'))} per fold); predictions differ on {esc(q.get('predictions_differ'))}"))
    elif q.get("note"):
        rows.append(("int8 against fp32 on held-out sequences", esc(q["note"])))
    steps = "".join(f"<tr><td>{esc(k)}</td><td class=\"num\">{duration(_finite(v))}</td></tr>"
                    for k, v in (exp.get("seconds") or {}).items())
    warn = "".join(f"<li>{esc(w)}</li>" for w in exp.get("warnings") or [])
    return ('<h2 id="export">Export</h2>' + _kv_table(rows) + _parity_table(exp) + _size_table(exp)
            + _latency_table(exp)
            + (f'<h3>Conversion steps</h3><table id="steps"><tr><th>step</th><th>time</th></tr>{steps}</table>'
               if steps else "")
            + (f'<h3>Export warnings</h3><ul class="warn">{warn}</ul>' if warn else ""))
