"""The report's participant panel: who each arm helps, from the `analyze` dict."""

from __future__ import annotations

from typing import Any

from ablate.report.charts import esc
from ablate.report.fmt import DASH, acc, signed


def effect_sentences(a: dict[str, Any]) -> list[str]:
    """The group effects that hold at the family-wise level, in words (plain text)."""
    return [e["text"] for e in a.get("participant_effects", []) if e.get("differs")]


def _ci(v: float | None, lo: float | None, hi: float | None) -> str:
    return f"{signed(v)} [{signed(lo)}, {signed(hi)}]" if lo is not None else signed(v)


def _effects_table(effects: list[dict[str, Any]]) -> str:
    body = []
    for e in effects:
        (na, ga), (nb, gb) = e["groups"].items()
        mark = ' style="background:#fff3cd"' if e["differs"] else ""
        p = f"{e['p']:.2g}" + (" (too few participants to reach the level)" if e.get("too_few") else "")
        body.append(f"<tr{mark}><td>{esc(e['arm'])}</td><td>{esc(e['attribute'])}</td>"
                    f'<td class="num">{esc(na)} ({ga["participants"]}): {_ci(ga["difference"], ga["low"], ga["high"])}</td>'
                    f'<td class="num">{esc(nb)} ({gb["participants"]}): {_ci(gb["difference"], gb["low"], gb["high"])}</td>'
                    f'<td class="num">{_ci(e["gap"], e["gap_low"], e["gap_high"])}</td><td class="num">{p}</td></tr>')
    level = f"{(1 - effects[0]['level']):.2g}" if effects else ""
    return ("<table id=\"participant-effects\"><tr><th>arm</th><th>participants grouped by</th><th>group A: difference "
            "to baseline [95% bootstrap]</th><th>group B</th><th>gap A - B [95%]</th>"
            f"<th>permutation p (differs at &lt;= {level})</th></tr>{''.join(body)}</table>")


def _participants_table(a: dict[str, Any]) -> str:
    rows = a.get("participants") or []
    arms = list(rows[0]["arms"]) if rows else []
    gen = any(r.get("generator") for r in rows)
    head = ("<tr><th>participant</th><th>dominant hand</th><th>sequences</th><th>median frames</th>"
            "<th>frames without hands</th>" + ("<th>generator: left-handed, scale, tilt</th>" if gen else "")
            + "".join(f"<th>{esc(arm)}</th>" for arm in arms) + "</tr>")
    body = []
    for r in rows:
        g = r.get("generator") or {}
        facts = (f"<td>{'yes' if g.get('left_handed') else 'no'}, {g.get('scale', DASH)}, {g.get('tilt_deg', DASH)}°</td>"
                 if gen else "")
        cells = []
        for arm in arms:
            x = r["arms"][arm]
            extra = "" if arm == a.get("baseline") else f"<br>{_ci(x.get('difference'), x.get('low'), x.get('high'))}"
            cells.append(f'<td class="num">{acc(x["accuracy"])}{extra}</td>')
        body.append(f'<tr data-participant="{r["participant"]}"><td>{r["participant"]}</td>'
                    f"<td>{esc(r['dominant_hand'])}</td><td class=\"num\">{r['n_sequences']}</td>"
                    f'<td class="num">{r["median_length"]:g}</td><td class="num">{r["no_hand_share"]:.1%}</td>'
                    f"{facts}{''.join(cells)}</tr>")
    return f'<table id="participants-table">{head}{"".join(body)}</table>'


def participant_section(a: dict[str, Any]) -> str:
    head = '<h2 id="participants">Who each arm helps</h2>'
    if not a.get("participants"):
        return head + f'<p class="note">No participant panel: {esc(a.get("participant_note") or "no predictions yet")}.</p>'
    said = effect_sentences(a)
    words = ("<ul>" + "".join(f"<li>{esc(s)}</li>" for s in said) + "</ul>") if said else (
        "<p>No arm's effect differs between these groups of participants at the family-wise 5% level.</p>")
    note = f'<p class="note">{esc(a["participant_note"])}.</p>' if a.get("participant_note") else ""
    return (head + "<p>Accuracy per participant (each sequence averaged over its repeats and seeds) and the "
            "paired difference to the baseline with a 95% bootstrap interval over that participant's sequences. "
            "Groups: the attributes derived from the landmarks (dominant hand: the hand detected more and moving "
            "more; median sequence length; share of frames without any hand) and, on synthetic data, the "
            "generator's own facts. A group's difference is the mean over its participants, with a two-stage "
            "bootstrap interval (participants, then their sequences). An effect is said to differ between groups "
            "only when a permutation test of the participants' group labels gives p at or below 0.05 divided by "
            "the number of attributes (Bonferroni: each arm's sentences together hold 5%).</p>"
            + words + note + _effects_table(a.get("participant_effects", [])) + _participants_table(a))
