"""Who a recipe leaves out of training: `drop_participants` (ids) and `drop_messiest` (the k other
participants with the largest share of frames without any hand, the write-up's "messy" signers).

Only training folds lose them: every validation fold keeps all its participants, so an arm that
drops someone is scored on the same sequences as the baseline and the paired comparison holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ablate.data.cache import Cache
from ablate.data.participants import no_hand_shares
from ablate.errors import UserError


def dropped_participants(config: Any, cache: Cache) -> np.ndarray:
    """The sorted participant ids that `config` leaves out of training on `cache`."""
    if not config.drop_participants and not config.drop_messiest:
        return np.zeros(0, dtype=np.int64)
    shares = no_hand_shares(cache)
    unknown = [pid for pid in config.drop_participants if pid not in shares]
    if unknown:
        shown = ", ".join(map(str, sorted(shares)[:8])) + (", ..." if len(shares) > 8 else "")
        raise UserError(f"drop_participants: participant {unknown[0]} is not in the data {cache.dir} "
                        f"(its {len(shares)} participants: {shown}; `ablate data info` lists them)")
    rest = sorted((pid for pid in shares if pid not in config.drop_participants), key=lambda p: (-shares[p], p))
    if config.drop_messiest >= len(rest):
        raise UserError(f"drop_messiest: {config.drop_messiest} would leave no participant to train on "
                        f"({len(rest)} not dropped by id in {cache.dir})")
    return np.array(sorted([*config.drop_participants, *rest[:config.drop_messiest]]), dtype=np.int64)


def training_items(train_idx: np.ndarray, config: Any, cache: Cache, fold: int) -> np.ndarray:
    """`train_idx` without the dropped participants' sequences; an empty result is refused."""
    gone = dropped_participants(config, cache)
    kept = train_idx[~np.isin(cache.participants[train_idx], gone)] if gone.size else train_idx
    if not kept.size:
        raise UserError(f"fold {fold}: dropping participants {', '.join(map(str, gone))} leaves no training "
                        "sequence")
    return kept


def check_drops(space: Any, preset: str, cache: Cache, repeats: int = 1) -> None:
    """Every arm of `space` drops participants this data has and leaves every training fold of the
    study (each repeat's partition) someone to train on; the message names the arm."""
    from ablate.resolve import resolve

    for arm in space.arms.values():
        try:
            check_config(resolve(space.base, preset, arm).config, cache, repeats)
        except UserError as e:
            raise UserError(f"{arm.source}: {e}") from None


def check_config(config: Any, cache: Cache, repeats: int = 1) -> None:
    """`config`'s drops exist in the data and leave every fold of `repeats` partitions a training set."""
    gone = dropped_participants(config, cache)
    if not gone.size:
        return
    kept = ~np.isin(cache.participants, gone)
    for r in range(repeats):
        folds = cache.folds(config.folds, config.fold_seed + r, config.fold_kind)
        for k in range(config.folds):
            if not (kept & (folds != k)).any():
                raise UserError(f"dropping participants {', '.join(map(str, gone))} leaves fold {k} "
                                f"{'of repeat ' + str(r) + ' ' if repeats > 1 else ''}no training sequence")
