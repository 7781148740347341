"""Studies: one Optuna study per search space, its typed records, its modes, and the workers.

    runner     `ablate run`: prepare, workers, stages          (cli -> study -> objective -> train)
    setup      create or resume: same question, arms that grow
    objective  one trial: arm -> config (ablate.resolve) -> folds (ablate.train)
    modes      ablation, tune, both: what to queue and sample, which trial stands for an arm
    queue      claiming, running, recovering and retrying trials on the storage
    records    the typed study and trial records: the only code reading Optuna attributes
    storage    journal file or database URL, and naming it without its password
    dashboard  the optuna-dashboard note, chart and artifacts
"""

import warnings

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
# WilcoxonPruner, TPE's `group` and heartbeats are marked experimental; the versions are pinned.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
