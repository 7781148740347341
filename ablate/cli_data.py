"""`ablate data ...`: generate, ingest, verify and inspect data sets. Imports stay inside the handlers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ablate.cli_args import non_negative_int, positive_int
from ablate.errors import EXIT_USER_ERROR

EXIT_MISMATCH = 1


def _say(msg: str) -> None:
    print(msg, flush=True)


def progress(label: str) -> Callable[[int, int], None] | None:
    """A one-line progress counter on a terminal; silent otherwise (logs stay clean)."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def cmd_synth(a: argparse.Namespace) -> int:
    from ablate.data.synth import SynthConfig, generate

    given = {"n_signs": a.signs, "n_participants": a.participants, "reps": a.reps, "seed": a.seed,
             "difficulty": a.difficulty, "tilted_share": a.tilted_share, "tilted_deg": a.tilted_deg,
             "tilt_deg": a.tilt_deg}
    cfg = SynthConfig(**{k: v for k, v in given.items() if v is not None})
    if a.cache_only:
        from ablate.data.synth_cache import synth_cache

        r = synth_cache(Path(a.out), cfg, workers=a.workers, progress=progress("synth"))
        _say(f"wrote a cache of {r.read} sequences ({r.frames_read} frames; {cfg.n_signs} signs, "
             f"{cfg.n_participants} participants) to {a.out} in {r.seconds:.1f}s; fingerprint {r.fingerprint}")
        return 0
    summary = generate(Path(a.out), cfg, workers=a.workers, progress=progress("synth"))
    _say(f"wrote {summary['sequences']} sequences ({cfg.n_signs} signs, {cfg.n_participants} participants) "
         f"to {a.out} in {summary['seconds']:.1f}s")
    return 0


def cmd_ingest(a: argparse.Namespace) -> int:
    from ablate.data.ingest import ingest

    r = ingest(Path(a.dir), Path(a.cache) if a.cache else None, workers=a.workers, rebuild=a.rebuild,
               progress=progress("ingest"))
    for s in r.skipped:
        print(f"skipped {s['path']}: {s['reason']}", file=sys.stderr)
    state = "updated" if r.changed else "already up to date"
    _say(f"cache {r.cache_dir} {state}: {r.total} listed, {r.read} read ({r.frames_read} frames), "
         f"{r.reused} reused, {len(r.skipped)} skipped; {r.seconds:.1f}s; fingerprint {r.fingerprint}")
    return 0


def cache_path(arg: str | None) -> Path:
    from ablate.data.cache import resolve_cache_dir
    from ablate.data.default import default_cache

    return resolve_cache_dir(Path(arg)) if arg else default_cache()


def cmd_verify(a: argparse.Namespace) -> int:
    from ablate.data.verify import verify

    r = verify(cache_path(a.cache), workers=a.workers, progress=progress("verify"))
    for line in r.mismatches:
        print(f"mismatch: {line}", file=sys.stderr)
    where = "the cache and its source files" if r.source_checked else \
        f"the cache only (source {r.source} has no train.csv any more)"
    verdict = f"{len(r.mismatches)} mismatch(es)" if r.mismatches else "all match"
    skipped = f" ({r.skipped} file(s) skipped at ingest, see `ablate data info`)" if r.skipped else ""
    _say(f"verified {r.checked} sequences of {r.cache_dir} against {where}: {verdict}{skipped}")
    return EXIT_MISMATCH if r.mismatches else 0


def cmd_info(a: argparse.Namespace) -> int:
    from ablate.data.cache import Cache

    cache = Cache(cache_path(a.cache))
    info = cache.info()
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    _say(f"cache        {info['cache']}\nsource       {info['source']}\nfingerprint  {info['fingerprint']}\n"
         f"sequences    {info['sequences']}\nparticipants {info['participants']}\n"
         f"signs        {info['signs']} (of {info['signs_in_map']} in the sign map)\n"
         f"frames       min {info['frames_min']}, median {info['frames_median']:g}, max {info['frames_max']}, "
         f"total {info['frames_total']}\n"
         f"missing hand {pct(info['missing_a_hand'])} of frames (left {pct(info['missing_left_hand'])}, "
         f"right {pct(info['missing_right_hand'])}, both {pct(info['missing_both_hands'])})\n"
         f"skipped      {info['skipped']} file(s) at ingest")
    _participant_table(cache)
    return 0


def _participant_table(cache: Any) -> None:
    """Participants, the messiest (most frames without any hand) first: who a `data` arm could drop."""
    from ablate.data.participants import no_hand_shares, participant_facts

    share = no_hand_shares(cache)  # unrounded: the order drop_messiest picks in
    facts = sorted(participant_facts(cache), key=lambda f: (-share[f["participant"]], f["participant"]))
    gen = all("generator" in f for f in facts)
    _say("\nparticipant  sequences  median frames  no hand  dominant hand" + ("  generator: left-handed, tilt" if gen else ""))
    for f in facts:
        g = f.get("generator", {})
        extra = f"  {'yes' if g.get('left_handed') else 'no'}, {g.get('tilt_deg', 0):+.0f} deg" if gen else ""
        _say(f"{f['participant']:>11}  {f['n_sequences']:>9}  {f['median_length']:>13g}  {100 * f['no_hand_share']:>6.1f}%"
             f"  {f['dominant_hand']:>13}{extra}")


def cmd_folds(a: argparse.Namespace) -> int:
    import numpy as np

    from ablate.data.cache import Cache
    from ablate.data.folds import GROUPED, UNGROUPED_LEAKY

    cache = Cache(cache_path(a.cache))
    kind = UNGROUPED_LEAKY if a.ungrouped_leaky else GROUPED
    fold = cache.folds(a.k, a.seed, kind)
    if kind == UNGROUPED_LEAKY:
        _say("UNGROUPED (leaky) folds: participants appear in several folds; for showing leakage only")
    for f in range(a.k):
        sel = fold == f
        parts = np.unique(cache.participants[sel])
        _say(f"fold {f}: {int(sel.sum())} sequences, {len(parts)} participants "
             f"({', '.join(map(str, parts[:8]))}{', ...' if len(parts) > 8 else ''})")
    return 0


def add_commands(sub: Any, parser_class: type) -> None:
    data = sub.add_parser("data", help="generate, ingest, verify and inspect data sets")
    data.set_defaults(func=lambda _a: (data.print_help(), EXIT_USER_ERROR)[1])
    dsub = data.add_subparsers(dest="data_command", metavar="STEP", parser_class=parser_class)
    s = dsub.add_parser("synth", help="write a synthetic data set in the Kaggle asl-signs layout")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--signs", type=positive_int, default=None, help="number of signs (full size: 250)")
    s.add_argument("--participants", type=positive_int, default=None, help="number of participants (full size: 21)")
    s.add_argument("--reps", type=positive_int, default=None, help="sequences per participant and sign (full size: 18)")
    s.add_argument("--seed", type=non_negative_int, default=None, help="generator seed")
    s.add_argument("--difficulty", type=float, default=None, help="1.0 default; 0 is easy")
    s.add_argument("--tilted-share", type=float, default=None,
                   help="planted effect 2: share of participants filmed with a rolled camera (default 0)")
    s.add_argument("--tilted-deg", type=float, default=None, help="their roll, degrees (default 25)")
    s.add_argument("--tilt-deg", type=float, default=None, help="std of every participant's own tilt, degrees (default 12)")
    s.add_argument("--workers", type=positive_int, default=1, help="writer processes")
    s.add_argument("--cache-only", action="store_true",
                   help="write a landmark cache into --out instead of parquet files (for scale tests; "
                        "`ablate run --data OUT` reads it)")
    s.set_defaults(func=cmd_synth)
    i = dsub.add_parser("ingest", help="build or update the landmark cache of a Kaggle-layout directory")
    i.add_argument("dir", help="directory with train.csv, train_landmark_files/ and the sign map")
    i.add_argument("--cache", help="cache directory (default: $ABLATE_HOME/cache/<name>-<hash>)")
    i.add_argument("--workers", type=positive_int, default=None, help="reader threads (default: all cores)")
    i.add_argument("--rebuild", action="store_true",
                   help="build the cache afresh (the current one stays usable until the new one replaces it)")
    i.set_defaults(func=cmd_ingest)
    v = dsub.add_parser("verify", help="check a cache against its stored digests and its source files")
    v.add_argument("cache", nargs="?", help="cache or data directory (default: the embedded synthetic set)")
    v.add_argument("--workers", type=positive_int, default=None, help="reader threads (default: all cores)")
    v.set_defaults(func=cmd_verify)
    n = dsub.add_parser("info", help="print counts for a cache, and its participants, the messiest first")
    n.add_argument("cache", nargs="?", help="cache or data directory (default: the embedded synthetic set)")
    n.set_defaults(func=cmd_info)
    f = dsub.add_parser("folds", help="print the stored cross-validation folds")
    f.add_argument("cache", nargs="?", help="cache or data directory (default: the embedded synthetic set)")
    f.add_argument("--k", type=positive_int, default=5, help="number of folds (default 5)")
    f.add_argument("--seed", type=non_negative_int, default=0, help="fold seed (default 0)")
    f.add_argument("--ungrouped-leaky", action="store_true",
                   help="ungrouped StratifiedKFold: participants leak across folds (to show the leak only)")
    f.set_defaults(func=cmd_folds)
