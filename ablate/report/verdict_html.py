"""The report's verdict sections: the summary table, what the design could detect, how to read it,
and the frequentist details (corrected t with Holm), all from the `analyze` dict."""

from __future__ import annotations

from typing import Any

from ablate.report.charts import VERDICT_COLOURS, esc
from ablate.report.fmt import DASH, acc, duration, pval, signed, with_interval

VERDICT_ORDER = ("better", "worse", "equivalent", "undecided", "incomplete")


def verdict_summary(a: dict[str, Any]) -> str:
    """One line (plain text): which arms beat, trail or match the baseline, how many are open."""
    rows = [r for r in a["arms"] if r["verdict"] != "baseline"]
    if not rows:
        return "no results yet"
    by = {v: [r["arm"] for r in rows if r["verdict"] == v] for v in VERDICT_ORDER}
    parts = [f"{v}: {', '.join(by[v]) or 'none'}" for v in ("better", "worse")]
    if by["equivalent"]:
        parts.append(f"equivalent: {', '.join(by['equivalent'])}")
    for v in ("undecided", "incomplete"):
        if by[v]:
            parts.append(f"{v}: {len(by[v])} arm{'s' if len(by[v]) > 1 else ''}")
    return "; ".join(parts)


def verdict_tag(verdict: str) -> str:
    colour = VERDICT_COLOURS.get(verdict, "#333333")
    return f'<span class="tag" style="background:{colour}">{esc(verdict)}</span>'


def _trials_cell(r: dict[str, Any]) -> str:
    t = r["trials"]
    text = f"{t['COMPLETE']} / {t['PRUNED']} / {t['FAIL']}"
    waiting = t.get("RUNNING", 0) + t.get("WAITING", 0)
    return text + (f" (+{waiting} open)" if waiting else "")


def _probs(r: dict[str, Any]) -> str:
    if r["p_better"] is None:
        return DASH
    return f"{r['p_worse']:.3f} / {r['p_equivalent']:.3f} / {r['p_better']:.3f}"


def summary_table(a: dict[str, Any]) -> str:
    if not a["arms"]:
        return '<p class="note">No finished folds yet: nothing to compare.</p>'
    units = int(a.get("repeats") or 1) * int(a.get("folds") or 0)
    head = ("<tr><th>arm</th><th>units</th><th>mean accuracy [95% CI]</th>"
            "<th>difference to baseline [95% posterior interval]</th><th>P(worse) / P(equivalent) / P(better)</th>"
            "<th>smallest detectable</th><th>effect size</th><th>verdict</th>"
            "<th>trials complete / pruned / failed</th><th>training time</th></tr>")
    body = []
    for r in a["arms"]:
        base = r["verdict"] == "baseline"
        diff = "baseline" if base else with_interval(r["diff"], r["diff_low"], r["diff_high"], signed)
        effect = DASH if base or r["effect_size"] is None else f"{r['effect_size']:+.2f}"
        body.append(
            f'<tr data-arm="{esc(r["arm"])}"><td class="arm">{esc(r["arm"])}</td>'
            f'<td class="num n" title="{r["n"]} fold scores">{r["n_units"]} of {units}</td>'
            f'<td class="num mean">{with_interval(r["mean"], r["ci_low"], r["ci_high"])}</td>'
            f'<td class="num diff">{diff}</td>'
            f'<td class="num probs">{"" if base else _probs(r)}</td>'
            f'<td class="num mde">{"" if base else signed(r["mde"])}</td>'
            f'<td class="num effect">{effect}</td>'
            f'<td class="verdict">{verdict_tag(r["verdict"])}</td>'
            f'<td class="num trials">{_trials_cell(r)}</td>'
            f'<td class="num time">{duration(r["train_seconds"])}</td></tr>')
    return f'<table id="summary-table">{head}{"".join(body)}</table>'


def sensitivity_text(a: dict[str, Any]) -> str:
    """What the design could have detected, in words (plain text)."""
    s = a.get("sensitivity") or {}
    if s.get("mde") is None:
        return "Too few paired differences with any spread to say what this design could detect."
    units = f"{a.get('repeats') or 1} repeat(s) x {a.get('folds')} folds"
    text = (f"With {units} and the arms' typical spread of paired differences (std {s['sd_diff']:.4f} per unit), "
            f"this study calls an arm better with 80% power only when it is truly at least {s['mde']:+.4f} better "
            f"than the baseline.")
    if s.get("repeats_needed"):
        text += (f" An arm {s['target']:+.4f} better (half a point beyond the ROPE) would need "
                 f"{s['repeats_needed']} repeat(s) of {a.get('folds')} folds (--repeats).")
    else:
        text += (f" An arm {s['target']:+.4f} better (half a point beyond the ROPE) is out of reach of repeats: "
                 f"with any number of them the smallest detectable improvement stays above about "
                 f"{s['mde_limit']:+.4f}, because folds share training data; less noise per unit (more --seeds, "
                 "averaged per fold) or more folds (a smaller n_test/n_train) is what helps.")
    return text


def how_to_read(a: dict[str, Any]) -> str:
    rho = (f" (here about {a['n_test']:.0f}/{a['n_train']:.0f} = {a['n_test'] / a['n_train']:.3f})"
           if a.get("n_train") and a.get("n_test") else "")
    low, high = a["rope"]
    return f"""<h3>How to read this</h3>
<p>Every arm is trained and scored on the same participant-grouped folds (one partition per repeat) and
seeds, so its scores pair with the baseline's. A <b>unit</b> is one fold of one repeat; its seeds are
averaged first. For each unit, d = arm accuracy minus baseline accuracy. The <b>Bayesian correlated
t-test</b> (Benavoli et al., JMLR 2017) takes the true mean difference to follow Student's t with n - 1
degrees of freedom, centred on the mean of the d, with scale se = sqrt((1/n + n_test/n_train) * s2)
(s2 the variance of the d; the n_test/n_train term{rho} is the Nadeau-Bengio correction for folds that
share training data). Against the <b>region of practical equivalence</b> (ROPE) [{low:+g}, {high:+g}],
P(worse), P(equivalent) and P(better) are its mass below, inside and above the ROPE.</p>
<p>The verdict is <b>better</b>, <b>worse</b> or <b>equivalent</b> when that probability is at least
{a.get('decision', 0.975):g}, else <b>undecided</b> (not evidence that the arms are the same). With a
zero-width ROPE this is the two-sided corrected t-test at 5%; the ROPE only makes better and worse
rarer, so true nulls get one of them at most about 5% of the time (measured:
<code>benchmarks/calibration.py</code>). An arm gets no verdict, <b>incomplete</b>, when it or the
baseline lacks a unit of the design (pruned, failed or unfinished) or when its differences have zero
variance. The interval shown is the central 95% of the posterior: "better" means it lies wholly
above the ROPE ("equivalent" needs 97.5% of the posterior inside the ROPE). <b>Smallest detectable</b>: the true improvement the rule would call better with
80% power, at that arm's observed spread. <b>Effect size</b>: mean difference / std of the d.
These verdicts are per arm, not corrected for the number of arms; the details below hold the
family-wise test.</p>
<p>{esc(sensitivity_text(a))}</p>"""


def details_section(a: dict[str, Any]) -> str:
    """The frequentist corrected t-test, Holm-adjusted across the arms, each interval at its Holm level."""
    rows = [r for r in a["arms"] if r["verdict"] != "baseline"]
    if not rows:
        return ""
    body = []
    for r in rows:
        conf = DASH if r["holm_confidence"] is None else f"{r['holm_confidence'] * 100:.4g}%"
        body.append(f'<tr data-arm="{esc(r["arm"])}"><td class="arm">{esc(r["arm"])}</td>'
                    f'<td class="num p-corrected">{pval(r["p_corrected"])}</td>'
                    f'<td class="num p-holm">{pval(r["p_corrected_holm"])}</td>'
                    f'<td class="num holm-ci">{conf} {with_interval(r["diff"], r["holm_low"], r["holm_high"], signed)}'
                    "</td></tr>")
    return (f'<h3 id="details">Details: the corrected t-test with Holm (alpha {a["alpha"]:g})</h3>'
            '<p class="note">Not the verdict. The frequentist corrected resampled t-test (Nadeau and Bengio 2003) '
            "for a difference of zero, its p Holm-adjusted across the arms (family-wise error at alpha), and the "
            "interval at the level of the arm's Holm step (alpha / (m - step + 1)): it excludes zero when that step "
            "rejects (Holm also needs every earlier step to reject). Arms without the full design have no test.</p>"
            "<table id=\"details-table\"><tr><th>arm</th><th>p</th><th>p (Holm)</th>"
            f"<th>difference [interval at the Holm step's level]</th></tr>{''.join(body)}</table>")


__all__ = ["VERDICT_ORDER", "acc", "details_section", "how_to_read", "sensitivity_text", "summary_table",
           "verdict_summary", "verdict_tag"]
