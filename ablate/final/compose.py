"""The final recipe: the base recipe with each named study's winning arm applied, and why.

A study's winner is the arm with the highest mean among those its report calls "better" than the
baseline. When no arm is better, the base choice stays, unless `prefer_mean` asks for the highest
mean anyway (then the provenance says that it is not backed by a test). Unfinished studies refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import optuna

from ablate.config import Config
from ablate.errors import UserError, close_match
from ablate.resolve import load_base, resolve
from ablate.study.setup import other_recipes
from ablate.spaces import Space, list_spaces, load_space, spaces_dir
from ablate.study import records
from ablate.study.modes import mode_of
from ablate.study.setup import differences
from ablate.study.storage import mask_url, open_storage

_NOT_CHANGES = ("seed",)  # an arm's seed_offset is noise control, not a choice to carry over


@dataclass
class Choice:
    """What one study decided, with its evidence."""

    space: str
    study: str
    mode: str
    baseline: str
    chosen: str
    reason: str
    changes: dict[str, Any]  # Config field -> the chosen value (JSON form)
    evidence: list[dict[str, Any]]  # the report rows: arm, mean, diff, CI, p, verdict
    fingerprint: str | None = None


@dataclass
class Recipe:
    config: Config
    preset: str
    study_preset: str
    storage: str
    recipe_name: str = "baseline"
    choices: list[Choice] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        """Lines for the terminal: the recipe, then each choice and where it came from."""
        c = self.config
        studies = records.study_name("*", self.recipe_name, self.study_preset)
        lines = [f"final recipe ({self.recipe_name}, preset {self.preset}; studies '{studies}' in {self.storage}):"]
        for key in ("features", "model", "loss", "optimizer", "schedule"):
            comp = getattr(c, key)
            lines.append(f"  {key:<13} {comp.name} {_params(comp.params)}")
        lines.append(f"  {'augmentations':<13} {', '.join(a.name for a in c.augmentations) or '(none)'}")
        lines.append(f"  {'training':<13} {c.epochs} epochs, batch {c.batch_size}, {c.folds} grouped folds (seed {c.fold_seed})")
        for ch in self.choices:
            lines.append(f"  from {ch.study}: {ch.reason}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return lines


def _params(params: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")" if params else ""


def _space_on(name: str, recipe: str) -> Space:
    """The space on `recipe`; a space that cannot run on it says which recipe its file runs on."""
    try:
        return load_space(name, recipe=recipe)
    except UserError as e:
        own = load_space(name).base.recipe_name
        if own == recipe:
            raise
        raise UserError(f"--from {name}: its file's arms change recipe {own!r} ({e}); finalize with "
                        f"--recipe {own}") from None


def _unfinished(study: optuna.Study, space: Space) -> str | None:
    """Why the study cannot be used yet (its mode decides), or None."""
    meta = records.read_meta(study)
    return mode_of(meta.mode).unfinished(records.trial_records(study, meta), space, meta)


# --prefer faster-if-equivalent: at most this share of the baseline's latency. On this shared 2-core
# machine one model's latency moved by up to +-20% between timing sessions (benchmarks/arm_latency.py,
# 2026-11-26: identical graphs 0.94-1.36 ms), so a smaller gain could be noise.
FASTER = 0.8


def _faster_equivalent(usable: list[dict[str, Any]], baseline: str) -> tuple[str, str] | None:
    """The fastest arm whose verdict is "equivalent" and whose latency is at most FASTER times the
    baseline's, with the reason in words; None when there is none (or no latency was measured)."""
    base = next((r for r in usable if r["arm"] == baseline), None)
    if base is None or base.get("latency_ms") is None:
        return None
    fast = [r for r in usable if r["verdict"] == "equivalent" and r.get("latency_ms") is not None
            and r["latency_ms"] <= FASTER * base["latency_ms"]]
    if not fast:
        return None
    win = min(fast, key=lambda r: r["latency_ms"])
    return win["arm"], (f"{win['arm']} is equivalent to {baseline} (P(equivalent) {win['p_equivalent']:.3f}; "
                        f"{_row_words(win)}) and faster: {win['latency_ms']:.2f} ms against {base['latency_ms']:.2f} "
                        f"ms per sequence ({win['latency_ms'] / base['latency_ms']:.0%}); taken because of "
                        "--prefer faster-if-equivalent")


def _decide(rows: list[dict[str, Any]], baseline: str, prefer_mean: bool,
            faster: bool = False) -> tuple[str, str]:
    usable = [r for r in rows if r["state"] == "COMPLETE" and r["mean"] is not None]
    if not usable:
        raise UserError("no arm has a complete trial")
    best = max(usable, key=lambda r: r["mean"])
    better = [r for r in usable if r["verdict"] == "better"]
    if better:
        win = max(better, key=lambda r: r["mean"])
        return win["arm"], (f"{win['arm']} is better than {baseline} ({_row_words(win)})")
    quick = _faster_equivalent(usable, baseline) if faster else None
    if quick is not None:
        return quick
    if best["arm"] == baseline:
        return baseline, f"kept {baseline}: no arm has a higher mean ({best['mean']:.4f})"
    if prefer_mean:
        return best["arm"], (f"{best['arm']} has the highest mean but its verdict against {baseline} is "
                             f"{best['verdict']}, not better ({_row_words(best)}); taken because of --prefer-mean")
    return baseline, (f"kept {baseline}: the highest mean, {best['arm']}, shows {best['verdict']} "
                      f"({_row_words(best)}); pass --prefer-mean to take it anyway")


def _row_words(r: dict[str, Any]) -> str:
    ci = "" if r.get("diff_low") is None else f", 95% interval [{r['diff_low']:+.4f}, {r['diff_high']:+.4f}]"
    pb = r.get("p_better")
    return f"mean {r['mean']:.4f}, diff {r['diff']:+.4f}{ci}, P(better) {'-' if pb is None else f'{pb:.3f}'}"


def _same_definitions(study: optuna.Study, space: Space, arms: tuple[str, ...], where: str) -> None:
    """The arms and the base recipe as the study ran them: else finalize would train another recipe
    than the one the evidence is about."""
    meta = records.read_meta(study)
    for arm in arms:
        if arm not in space.arms:
            raise UserError(f"{where}: its arm {arm!r} is no longer in {space.path}; put it back to finalize from it")
        stored = meta.arms.get(arm)
        changed = differences(stored, space.arms[arm].spec()) if stored is not None else []
        if changed:
            raise UserError(f"{where}: arm {arm!r} changed in {space.path} since the study ran "
                            f"({'; '.join(changed[:3])}); restore it to finalize from this study")
    if meta.base_written:
        changed = differences(meta.base_written.get("recipe", {}), space.base.recipe, shared_only=True)
        changed += differences(meta.base_written.get("recipes", {}), other_recipes(space), shared_only=True)
        if changed:
            raise UserError(f"{where}: base.yaml's recipe changed since the study ran ({'; '.join(changed[:3])}); "
                            "its evidence is about the old recipe")


def _tuned(row: dict[str, Any], space: Space) -> dict[str, Any]:
    """The winning trial's values of the arm's tuned parameters (tune and both modes)."""
    ranges = space.arms[row["arm"]].ranges
    return {k: v for k, v in (row.get("params") or {}).items() if k in ranges}


def _diff(base: Config, chosen: Config) -> dict[str, Any]:
    b, c = base.to_dict(), chosen.to_dict()
    return {f.name: c[f.name] for f in fields(Config) if f.name not in _NOT_CHANGES and b[f.name] != c[f.name]}


def compose(spaces: list[str] | None, preset: str | None = None, study_preset: str | None = None,
            storage: str | None = None, prefer_mean: bool = False, alpha: float = 0.05,
            recipe_name: str = "baseline", faster: bool = False) -> Recipe:
    """Compose the final recipe from the named spaces' studies (default: every one that has a study)
    on the recipe `recipe_name`: the studies that ran on it, and it as the starting point."""
    from ablate.report.analysis import analyze

    try:
        base_file = load_base(spaces_dir()).for_recipe(recipe_name)
    except UserError as e:
        raise UserError(f"--recipe: {e}") from None
    study_preset = study_preset or preset or base_file.default_preset
    preset = preset or study_preset
    base = resolve(base_file, preset).config
    store = open_storage(storage, create=False)
    where = mask_url(storage) if storage else "the default journal"
    existing = {s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)}
    known = list_spaces()
    if spaces is None:
        spaces = [s for s in known if records.study_name(s, recipe_name, study_preset) in existing]
        if not spaces:
            raise UserError(f"no study of preset {study_preset!r} on recipe {recipe_name!r} in {where}: run "
                            f"`ablate run SPACE` first, or name studies with --from (spaces: {', '.join(known)})")
    recipe = Recipe(base, preset, study_preset, where, recipe_name)
    owner: dict[str, str] = {}
    for name in spaces:
        if name not in known:
            raise UserError(f"--from: unknown search space {name!r}{close_match(name, known)}; known: {', '.join(known)}")
        space = _space_on(name, recipe_name)
        sname = records.study_name(space.name, recipe_name, study_preset)
        command = f"ablate run {name} --preset {study_preset}" + (f" --recipe {recipe_name}" if recipe_name != "baseline" else "")
        if sname not in existing:
            others = sorted(s for s in existing if s.startswith(f"{name}-"))
            hint = f"; studies of this space there: {', '.join(others)} (choose with --study-preset or --recipe)" \
                if others else ""
            raise UserError(f"--from {name}: no study {sname!r} in {where} (run `{command}`){hint}")
        study = optuna.load_study(study_name=sname, storage=store)
        why = _unfinished(study, space)
        if why:
            raise UserError(f"--from {name}: study {sname!r} is unfinished: {why} (run `{command}` again to finish it)")
        a = analyze(study, alpha=alpha, with_leakage=False)
        try:
            arm, reason = _decide(a["arms"], space.baseline, prefer_mean, faster)
        except UserError as e:
            raise UserError(f"--from {name}: study {sname!r}: {e}") from None
        _same_definitions(study, space, (arm, space.baseline), f"--from {name}: study {sname!r}")
        row = next(r for r in a["arms"] if r["arm"] == arm)
        tuned = _tuned(row, space)
        if tuned and preset != study_preset:
            recipe.warnings.append(f"{sname}: {arm}'s values {tuned} were tuned under preset {study_preset!r} "
                                   f"and are used under {preset!r} (a learning rate tuned for a short schedule "
                                   "may not suit a long one)")
        chosen = resolve(space.base, preset, space.arms[arm], tuned).config
        changes = _diff(resolve(space.base, preset, space.arms[space.baseline]).config, chosen)
        if arm == space.baseline:  # a tuned baseline arm still brings its tuned values
            changes = _diff(base, chosen)
        for key in changes:
            if key in owner:
                raise UserError(f"--from {name}: {key} is chosen by both {owner[key]} and {name}; "
                                f"finalize from one of them")
            owner[key] = name
        recipe.config = recipe.config.replace(**{k: getattr(chosen, k) for k in changes})
        evidence = [{k: r.get(k) for k in ("arm", "mean", "ci_low", "ci_high", "diff", "diff_low", "diff_high",
                                           "p_worse", "p_equivalent", "p_better", "mde", "verdict", "state",
                                           "latency_ms", "parameters")}
                    for r in a["arms"]]
        recipe.choices.append(Choice(name, sname, space.mode, space.baseline, arm, reason, changes, evidence,
                                     records.read_meta(study).fingerprint or None))
        recipe.warnings += [f"{sname}: {w}" for w in a["warnings"]]
    return recipe
