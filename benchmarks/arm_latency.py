"""Time every arm of a study again, one after another, as `ablate run` does when its workers are
done (ablate/study/speed.py), and print the accuracy-latency table with the Pareto front. For a
quiet machine, or a study whose arms were timed while something else ran.

    python benchmarks/arm_latency.py STUDY [--storage URL] [--data DIR] [--repeats 1]

Nothing is written to the study; `--repeats N` times each arm N times, in turn, and reports the
median of the N figures per arm, with their range (how much the machine moved them).
"""

from __future__ import annotations

import argparse
import json
import statistics

import optuna
import torch

from ablate.config import Config
from ablate.data.cache import Cache
from ablate.parts import build_parts
from ablate.report.analysis import analyze
from ablate.study import records
from ablate.study.modes import mode_of
from ablate.study.runner import resolve_data
from ablate.study.speed import measure, pareto, quantile_lengths
from ablate.study.storage import open_storage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--storage", default=None)
    ap.add_argument("--data", default=None, help="the data whose lengths are timed (default: the embedded set)")
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    study = optuna.load_study(study_name=a.study, storage=open_storage(a.storage, create=False))
    meta = records.read_meta(study)
    data = Cache(resolve_data(a.data))
    lengths = quantile_lengths(data.lengths)
    recs = records.trial_records(study, meta)
    mode = mode_of(meta.mode)
    means = {r["arm"]: r["mean"] for r in analyze(study, with_leakage=False)["arms"]}
    times: dict[str, list[float]] = {}
    params: dict[str, int] = {}
    for _ in range(a.repeats):
        for arm in meta.arms:
            rep = mode.representative([r for r in recs if r.arm == arm])
            if rep is None or rep.state != "COMPLETE":
                continue
            torch.manual_seed(0)
            cost = measure(build_parts(Config.from_dict(rep.config), data.num_classes), lengths)
            if cost.latency_ms is not None:
                times.setdefault(arm, []).append(cost.latency_ms)
                params[arm] = cost.parameters
    med = {arm: statistics.median(t) for arm, t in times.items()}
    front = pareto({arm: (means[arm], ms) for arm, ms in med.items() if means.get(arm) is not None})
    print(f"| arm | mean accuracy | parameters | latency ms (median of {a.repeats}) | range | Pareto |")
    print("|---|---|---|---|---|---|")
    for arm in med:
        print(f"| {arm} | {means[arm]:.4f} | {params[arm]:,} | {med[arm]:.3f} | {min(times[arm]):.3f}-"
              f"{max(times[arm]):.3f} | {'yes' if arm in front else ''} |")
    print(json.dumps({"study": a.study, "lengths": lengths, "latency_ms": times, "pareto": front}))


if __name__ == "__main__":
    main()
