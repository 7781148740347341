"""Known answers: do the reports' verdicts recover what the synthetic generator planted?

    python benchmarks/known_answers.py [--seed 7] [--seeds 1] [--repeats 1] [--preset known]
                                       [--spaces augmentations features]
                                       [--tilted-share 0.3] [--tilted-deg 25] [--tilt-deg 3] [--arms A B ...]
                                       [--participants 10]

Generates the default-size synthetic set with a generator seed other than the tests' (11) and the
demo's (0), with planted effect 2 in the form an ablation can find (a share of the right-handed
participants film with the camera rolled by +-25 degrees, the others nearly level: `--tilted-share`,
`--tilted-deg`, `--tilt-deg`; `--tilted-share 0 --tilt-deg 12` gives the default generator), runs the augmentations and features studies on it, and prints each arm's verdict next
to what was planted (README, "Planted effects"). Reports go to benchmarks/out/reports/.

The `quick` preset under-trains: after 8 epochs the sub-center ArcFace baseline reached 0.18 on 12
signs, and no planted effect was visible. So by default this script runs the studies from a copy of
search_spaces/ (benchmarks/out/spaces-known/) whose base recipe uses plain cross-entropy and which
adds a `known` preset of 20 epochs. Measured on fold 0 of this data, 30 epochs, one thread:
sub-center ArcFace 0.64 (augmented) vs 0.69 (none); cross-entropy 0.83 vs 0.75. Whether planted data
effects are found should not depend on the head; whether they are found at all depends on training
to convergence. Each study runs 2 workers by default, one thread each (two processes of two
threads each on 2 cores made folds several times slower); a re-run resumes and prints.

Besides each arm's verdict (Bayesian correlated t-test with the ROPE), it prints the participant
panel's group effects by the generator's facts (left-handed, camera tilt above the median): where
an overall verdict cannot say (removing hflip on a fold design with few left-handed participants),
the loss should show up concentrated on the left-handed participants.
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

import numpy as np
import yaml

from ablate.data.participants import GENERATOR_FILE, generator_csv
from ablate.data.synth import SynthConfig, generate
from ablate.report.analysis import LEAKY_SUFFIX, analyze
from ablate.report.writer import write_index, write_report
from ablate.study.runner import RunArgs, run

# arm -> what the planted effects predict, compared with the baseline arm
EXPECTED = {
    "augmentations": {
        "baseline_reseeded": "neither better nor worse (same recipe, other seeds)",
        "no_hflip": "worse, or worse for the left-handed participants (hflip undoes their mirrored signing)",
        "no_scale_rotate": "worse, or worse for the participants with a rolled camera (rotate undoes the roll)",
        "none": "worse (all of the above)",
    },
    "features": {
        "seed828_z": "worse (z is pure noise: dropping it helps)",
    },
}


KNOWN_PRESET = {
    "description": "known-answers benchmark: trains to (near) convergence on the default synthetic set",
    "epochs": 20,
    "batch_size": 32,
}


def known_spaces(out: Path, spaces: list[str], arms: list[str] | None) -> Path:
    """A copy of search_spaces/ with a cross-entropy base recipe and the `known` preset added; with
    `arms`, the studied spaces keep only their baseline and those arms (a cheaper run)."""
    src = Path(__file__).resolve().parent.parent / "search_spaces"
    dst = out / "spaces-known"
    dst.mkdir(parents=True, exist_ok=True)
    files = {f.stem: (f, yaml.safe_load(f.read_text())) for f in src.glob("*.yaml")}
    if arms:  # each asked arm must be in one of the studied spaces
        known = {arm for space in spaces if space in files for arm in files[space][1].get("arms", {})}
        missing = sorted(set(arms) - known)
        if missing:
            raise SystemExit(f"--arms: {', '.join(missing)} in none of {', '.join(spaces)} (arms: {', '.join(sorted(known))})")
    for stem, (f, data) in files.items():
        if arms and stem in spaces:
            data["arms"] = {k: v for k, v in data["arms"].items() if k == data["baseline"] or k in arms}
        if f.name == "base.yaml":
            data["recipe"]["loss"] = {"name": "ce", "params": {}}
            quick = data["presets"]["quick"]
            # a copy, not the same dict: safe_dump would write a YAML anchor, which ablate refuses
            data["presets"]["known"] = {**KNOWN_PRESET, "component_params": copy.deepcopy(quick["component_params"])}
        (dst / f.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


def planted_by_fold(data: Path, cfg: SynthConfig) -> str:
    """Which validation folds hold the (mirrored-signing) left-handed participants and the ones with
    a rolled camera: hflip and rotate can only matter where the training folds have few of them."""
    from ablate.data.cache import Cache
    from ablate.data.synth import participant_ids
    from ablate.data.synth_motion import participant, planted_roll
    from ablate.study.runner import resolve_data

    pids = participant_ids(cfg)
    left = {pids[p] for p in range(cfg.n_participants) if participant(cfg, p).left_handed}
    rolled = {pids[p] for p in range(cfg.n_participants) if planted_roll(cfg, p)}
    cache = Cache(resolve_data(str(data)))
    folds = cache.folds(5, 0)
    who = [set(cache.participants[folds == k].tolist()) for k in range(5)]
    return "left-handed / rolled-camera participants in each validation fold: " + "; ".join(
        f"fold {k + 1}: {len(w & left)} / {len(w & rolled)}" for k, w in enumerate(who))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7, help="generator seed")
    ap.add_argument("--seeds", type=int, default=1, help="training seeds per fold, averaged per fold")
    ap.add_argument("--repeats", type=int, default=1, help="re-partitions of the data (repeated cross-validation)")
    ap.add_argument("--preset", default="known", help="'known' (default) uses the benchmark's own spaces copy")
    ap.add_argument("--spaces", nargs="+", default=["augmentations", "features"])
    ap.add_argument("--workers", type=int, default=2,
                    help="study workers (each trains one fold at a time on its share of the cores)")
    ap.add_argument("--no-run", action="store_true",
                    help="train nothing: print the tables from the studies as they stand (unfinished arms are "
                         "incomplete)")
    ap.add_argument("--arms", nargs="+", default=None, help="only these arms (and the baseline) of the spaces")
    ap.add_argument("--participants", type=int, default=10, help="participants in the set (the default set has 10)")
    ap.add_argument("--tilted-share", type=float, default=0.3, help="planted effect 2: share of rolled cameras")
    ap.add_argument("--tilted-deg", type=float, default=25.0, help="planted effect 2: their roll, degrees")
    ap.add_argument("--tilt-deg", type=float, default=3.0, help="std of every participant's own tilt, degrees")
    ap.add_argument("--leaky", action="store_true",
                    help="also run each space on ungrouped (leaky) folds: the reports' leakage panel")
    a = ap.parse_args()
    out = Path(__file__).parent / "out"
    if a.arms and a.preset != "known":
        raise SystemExit("--arms needs the benchmark's own spaces copy (--preset known)")
    if a.preset == "known":
        os.environ["ABLATE_SPACES"] = str(known_spaces(out, a.spaces, a.arms))
    cfg = SynthConfig(seed=a.seed, n_participants=a.participants, tilted_share=a.tilted_share, tilted_deg=a.tilted_deg,
                      tilt_deg=a.tilt_deg)
    tag = f"{a.seed}" if cfg == SynthConfig(seed=a.seed) else f"{a.seed}-roll{round(a.tilted_share * 100)}x{a.tilted_deg:g}-tilt{a.tilt_deg:g}"
    tag += f"-p{a.participants}" if a.participants != SynthConfig().n_participants else ""
    data = out / f"known-{tag}"
    if not (data / "train.csv").is_file():
        generate(data, cfg)
    if not (data / GENERATOR_FILE).is_file():  # a set generated before the file existed: the same facts
        (data / GENERATOR_FILE).write_text(generator_csv(cfg))
    rows, leaks, per_fold, effects = [], [], {}, []
    for space in a.spaces:
        # one journal per space, so that two processes (one per space) never share a file
        storage = str(out / f"known-{tag}-{space}.journal")
        name = f"{space}-{a.preset}-gen{tag}-s{a.seeds}-r{a.repeats}" + ("-" + "-".join(sorted(a.arms)) if a.arms else "")
        if a.no_run:
            import optuna

            from ablate.study.storage import open_storage

            study = optuna.load_study(study_name=name, storage=open_storage(storage))
        else:
            study = run(RunArgs(space, preset=a.preset, data=str(data), storage=storage, seeds=a.seeds,
                                repeats=a.repeats, study=name, workers=a.workers))
        if a.leaky:  # same storage, name + LEAKY_SUFFIX: the grouped study's report pairs them
            run(RunArgs(space, preset=a.preset, data=str(data), storage=storage, seeds=a.seeds,
                        repeats=a.repeats, study=name + LEAKY_SUFFIX, leaky_folds=True, workers=a.workers))
            for r in analyze(study)["arms"]:
                if "leakage" in r:
                    g, u = (np.mean([v for v in r["leakage"][k] if v is not None]) for k in ("grouped", "ungrouped"))
                    leaks.append((space, r["arm"], g, u))
        write_report(study, out / "reports")
        result = analyze(study)
        arms = result["arms"]
        units = a.repeats * 5
        base = next(r["scores"] for r in arms if r["verdict"] == "baseline")
        for r in arms:
            rows.append((space, r["arm"], r["mean"], r["diff"], r["diff_low"], r["diff_high"], r["p_better"],
                         r["p_worse"], r["verdict"], EXPECTED.get(space, {}).get(r["arm"], "")))
            if r["arm"] in EXPECTED.get(space, {}):  # difference per (repeat, fold), mean over seeds
                d = np.array([np.nan if x is None or b is None else x - b for x, b in zip(r["scores"], base)])
                per_fold[(space, r["arm"])] = np.nanmean(d.reshape(a.repeats, a.seeds, 5), axis=1).ravel()[:units]
        effects += [(space, e) for e in result["participant_effects"] if "(generator)" in e["attribute"]]
    write_index(out / "reports")
    fmt = lambda v, d=4: "-" if v is None else f"{v:+.{d}f}"  # noqa: E731
    prob = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print("| space | arm | mean acc | diff [95% interval] | P(better) | P(worse) | verdict | planted expectation |")
    print("|---|---|---|---|---|---|---|---|")
    for space, arm, mean, diff, lo, hi, pb, pw, verdict, exp in rows:
        print(f"| {space} | {arm} | {'-' if mean is None else f'{mean:.4f}'} | {fmt(diff)} [{fmt(lo)}, {fmt(hi)}] | {prob(pb)} | {prob(pw)} | "
              f"{verdict} | {exp} |")
    print("\n" + planted_by_fold(data, cfg))
    print("\n| space | arm | " + " | ".join(f"unit {k + 1}" for k in range(a.repeats * 5)) + " |")
    print("|---|---|" + "---|" * (a.repeats * 5))
    for (space, arm), d in per_fold.items():
        print(f"| {space} | {arm} | " + " | ".join(f"{v:+.3f}" for v in d) + " |")
    print("\n| space | arm | generator's groups | first group | second group | gap [95% bootstrap] | permutation p | differs |")
    print("|---|---|---|---|---|---|---|---|")
    for space, e in effects:
        (na, ga), (nb, gb) = e["groups"].items()
        print(f"| {space} | {e['arm']} | {na} / {nb} | {fmt(ga['difference'], 3)} [{fmt(ga['low'], 3)}, {fmt(ga['high'], 3)}] | "
              f"{fmt(gb['difference'], 3)} [{fmt(gb['low'], 3)}, {fmt(gb['high'], 3)}] | {fmt(e['gap'], 3)} "
              f"[{fmt(e['gap_low'], 3)}, {fmt(e['gap_high'], 3)}] | {e['p']:.2g} (level {1 - e['level']:.2g}) | "
              f"{'yes' if e['differs'] else 'no'} |")
    if leaks:
        print("\n| space | arm | grouped folds | ungrouped (leaky) folds | over-statement |")
        print("|---|---|---|---|---|")
        for space, arm, g, u in leaks:
            print(f"| {space} | {arm} | {g:.4f} | {u:.4f} | {u - g:+.4f} |")


if __name__ == "__main__":
    main()
