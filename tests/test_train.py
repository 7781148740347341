"""The one-fold trainer: results, reproducibility, the NaN guard, SAM, mixup, early stopping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ablate import train as train_mod
from ablate.components._random import run_seed
from ablate.config import Component
from ablate.data.cache import Cache
from ablate.spaces import recipe_config
from ablate.step import Step
from ablate.train import TrainingDiverged, train_fold

TINY = recipe_config("full").replace(  # the baseline recipe, made small
    model=Component("transformer", {"width": 32, "heads": 4, "dropout": 0.1}),
    loss=Component("subcenter_arcface"),
    optimizer=Component("adamw", {"lr": 3e-3}),
    epochs=3, batch_size=16, amp="off",
)


def test_train_fold_reports_every_epoch(synth_cache: Path) -> None:
    data = Cache(synth_cache)
    r = train_fold(TINY, data, 1, keep_predictions=True)
    folds = data.folds(5, 0)
    assert r.n_val == int((folds == 1).sum()) and r.n_train + r.n_val == len(data)
    assert [e.epoch for e in r.epochs] == [0, 1, 2]
    assert all(np.isfinite([e.train_loss, e.val_loss, e.val_acc, e.seconds]).all() for e in r.epochs)
    assert r.best_acc == max(e.val_acc for e in r.epochs) and r.last_acc == r.epochs[-1].val_acc
    assert r.samples_per_sec > 0 and r.stopped == "completed"
    # predictions come back for exactly the validation sequences, and give the reported accuracy
    assert sorted(r.val_indices.tolist()) == np.flatnonzero(folds == 1).tolist()
    acc = float((r.val_probs.argmax(1) == data.labels[r.val_indices]).mean())
    assert acc == pytest.approx(r.last_acc)
    assert r.summary()["epochs"][0]["epoch"] == 0


def test_batches_made_together_are_the_batches_made_alone(synth_cache: Path) -> None:
    """On CUDA the input path makes several training batches at once (Feed.group) and splits
    them: each comes out as it would alone, cut to its own longest clip (alone, a batch keeps its
    frames before `speed`: the rest is padding)."""
    from ablate.feed import Feed
    from ablate.parts import build_augmentations, build_parts

    data = Cache(synth_cache)
    cfg = TINY.replace(augmentations=[Component("speed", {"p": 1.0}), Component("shift", {}), Component("hflip", {})])
    folds = data.folds(5, 0)
    train_idx, val_idx = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
    feeds = [Feed(cfg, data, 0, train_idx, val_idx, build_parts(cfg, data.num_classes).features, build_augmentations(cfg),
                  torch.device("cpu"), 1) for _ in range(2)]
    assert feeds[0].group == 1  # on the CPU
    feeds[1].group = 3  # an uneven last group too
    alone, together = list(feeds[0].train(2)), list(feeds[1].train(2))
    assert len(alone) == len(together) == len(feeds[0].train_sampler) > 3
    cut = 0
    for (xa, ma, ya), (xt, mt, yt) in zip(alone, together):
        t = mt.shape[1]
        assert torch.equal(ya, yt) and torch.equal(ma[:, :t], mt) and mt[:, -1].any() and not ma[:, t:].any()
        torch.testing.assert_close(xt, xa[:, :t], rtol=0, atol=1e-5)
        assert not xa[:, t:].any()
        cut += xa.shape[1] > t
    assert cut  # speed made some batches shorter than their padding


def test_a_batch_made_in_pieces_is_the_batch_made_whole(synth_cache: Path) -> None:
    """On the CPU a batch whose long clips would pad its short ones is made in two pieces and put
    together again: the same mask, labels and numbers (with `speed`, which shortens clips), the
    long clips cropped to `max_len` or not."""
    from ablate.feed import Feed, pieces
    from ablate.parts import build_augmentations, build_parts

    data = Cache(synth_cache)
    folds = data.folds(5, 0)
    train_idx, val_idx = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
    ranked = train_idx[np.argsort(data.lengths[train_idx], kind="stable")]
    items = np.random.default_rng(0).permutation(np.concatenate([ranked[:12], ranked[-2:]]))
    rows = pieces(data.lengths[items])
    assert len(rows) == 2 and sorted(np.concatenate(rows).tolist()) == list(range(len(items)))
    assert data.lengths[items][rows[0]].max() < data.lengths[items][rows[1]].min()
    for max_len in (384, 64):  # the long clips under the crop, then cropped
        assert (data.lengths[ranked[-2:]] > max_len).all() == (max_len == 64)
        cfg = TINY.replace(augmentations=[Component("speed", {"p": 1.0}), Component("shift", {}),
                                          Component("hflip", {})],
                           features=Component("seed828", {"max_len": max_len}))
        feed = Feed(cfg, data, 0, train_idx, val_idx, build_parts(cfg, data.num_classes).features,
                    build_augmentations(cfg), torch.device("cpu"), 1)
        for key in ((cfg.seed, cfg.fold_seed, 0, 3), None):  # a training batch, a validation batch
            (xw, mw, yw), (xp, mp, yp) = feed._made(items, key), feed._pieced(items, key)
            t = xp.shape[1]  # `speed` pads a batch made whole to its slowest draw: maybe more frames
            assert t <= xw.shape[1] and torch.equal(yw, yp) and torch.equal(mw[:, :t], mp)
            assert mp[:, -1].any() and not mw[:, t:].any() and not xw[:, t:].any()
            torch.testing.assert_close(xp, xw[:, :t], rtol=0, atol=1e-6)


def test_pieces_cut_only_where_padding_pays() -> None:
    from ablate.feed import PIECE_FRAMES, pieces

    assert [r.tolist() for r in pieces(np.array([40] * 31 + [500]))] == [list(range(31)), [31]]
    assert [r.tolist() for r in pieces(np.array([900, 40, 41]))] == [[1, 2], [0]]
    assert len(pieces(np.array([30, 35, 38, 40] * 8))) == 1  # similar lengths: one piece
    assert len(pieces(np.array([7]))) == 1
    # a cut that saves less than a piece costs is not made
    assert len(pieces(np.array([10, 10 + PIECE_FRAMES - 1]))) == 1
    assert len(pieces(np.array([10, 10 + PIECE_FRAMES + 1]))) == 2  # one that saves more is


def test_same_config_same_numbers(synth_cache: Path) -> None:
    data = Cache(synth_cache)
    cfg = TINY.replace(epochs=2)
    a, b = train_fold(cfg, data, 0), train_fold(cfg, data, 0)
    assert [(e.train_loss, e.val_loss, e.val_acc) for e in a.epochs] == [(e.train_loss, e.val_loss, e.val_acc) for e in b.epochs]
    c = train_fold(cfg.replace(seed=1), data, 0)
    assert [e.train_loss for e in c.epochs] != [e.train_loss for e in a.epochs]


def test_the_resident_store_is_built_once_per_process(synth_cache: Path) -> None:
    from ablate.components import FEATURES
    from ablate.data import resident

    data = Cache(synth_cache)
    resident._LAST.clear()
    train_fold(TINY.replace(epochs=1), data, 2)
    (store,) = resident._LAST.values()
    train_fold(TINY.replace(epochs=1, seed=3), data, 1)  # another fold and seed: the same store
    assert list(resident._LAST.values()) == [store]
    other = resident.store_for(data, FEATURES.build("xy_min").layout(), torch.device("cpu"))
    assert other is not store and list(resident._LAST.values()) == [other]  # one data set held at a time
    assert store.points.shape == (int(data.lengths.sum()) + 1, 3, 102)  # + the padding frame


def test_nan_loss_stops_the_fold_with_a_reason(synth_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = Step._loss

    def poisoned(self, *a):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        loss = real(self, *a)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(Step, "_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 0, batch 2"):
        train_fold(TINY, Cache(synth_cache), 0)


def test_sam_and_mixup_train(synth_cache: Path) -> None:
    cfg = TINY.replace(
        optimizer=Component("sam", {"lr": 3e-3}),
        augmentations=(Component("hflip"), Component("mixup", {"p": 1.0})),
        epochs=6, loss=Component("ce"),
    )
    r = train_fold(cfg.replace(early_stopping=0, epochs=2), Cache(synth_cache), 3)
    assert np.isfinite(r.epochs[-1].train_loss) and len(r.epochs) == 2


def test_early_stopping_stops_after_patience(synth_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    accs = iter([0.5, 0.6, 0.55, 0.58, 0.9, 0.9])  # best at epoch 1, then two epochs without a better one
    real = train_mod.evaluate

    def scripted(*a, **k):  # type: ignore[no-untyped-def]
        loss, _, probs = real(*a, **k)
        return loss, next(accs), probs

    monkeypatch.setattr(train_mod, "evaluate", scripted)
    r = train_fold(TINY.replace(epochs=6, early_stopping=2), Cache(synth_cache), 0)
    assert r.stopped == "early_stopping" and len(r.epochs) == 4 and (r.best_acc, r.best_epoch) == (0.6, 1)


def test_bad_fold_is_a_user_error(synth_cache: Path) -> None:
    from ablate.errors import UserError

    with pytest.raises(UserError, match="fold 7: expected 0..4"):
        train_fold(TINY, Cache(synth_cache), 7)


def test_device_and_amp_resolution() -> None:
    assert train_mod.resolve_device("cpu") == torch.device("cpu")
    assert train_mod.resolve_amp("off", torch.device("cpu")) is None
    assert train_mod.resolve_amp("bf16", torch.device("cpu")) is torch.bfloat16


def test_luck_is_drawn_per_fold_and_repeat_and_shared_by_arms(synth_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model init and batch order derive from (seed, fold seed, fold): two folds (or repeats) of one
    seed never share their initial weights or batch order; two arms on one fold share both."""
    data = Cache(synth_cache)
    seen: list[tuple[torch.Tensor, list[list[int]]]] = []
    real_feed, real_build = train_mod.Feed, train_mod.build_parts
    weights: list[torch.Tensor] = []

    class Stop(Exception):
        pass

    def build(config, n):  # noqa: ANN001, ANN202
        parts = real_build(config, n)
        weights.append(next(parts.model.parameters()).detach().clone())
        return parts

    def feed(*args):  # noqa: ANN002, ANN202
        f = real_feed(*args)
        seen.append((weights[-1], [list(b) for b in f.train_sampler]))
        raise Stop

    monkeypatch.setattr(train_mod, "build_parts", build)
    monkeypatch.setattr(train_mod, "Feed", feed)
    runs = [(TINY, 0), (TINY, 1), (TINY.replace(fold_seed=1), 0), (TINY.replace(loss=Component("focal")), 0)]
    for cfg, fold in runs:
        with pytest.raises(Stop):
            train_fold(cfg, data, fold)
    (w0, order0), (w1, _), (w_repeat, order_repeat), (w_arm, order_arm) = seen
    assert not torch.equal(w0, w1) and not torch.equal(w0, w_repeat)  # folds and repeats: their own luck
    assert order0 != order_repeat
    assert torch.equal(w0, w_arm) and order0 == order_arm  # another arm: the same luck on the same fold
    assert len({run_seed(0, 0, f) for f in range(5)} | {run_seed(0, 1, f) for f in range(5)}) == 10
    assert run_seed(1, 0, 0) != run_seed(0, 0, 0)


def test_batches_made_ahead_on_a_spare_core_change_no_number(synth_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU with room for a batch thread, the batches are made in it, ahead of the step:
    the same numbers as made in turn (augmentations hash their draws; the step's generators are
    its own)."""
    from ablate import feed as feed_mod

    data = Cache(synth_cache)
    cfg = TINY.replace(epochs=2, augmentations=(Component("hflip"), Component("rotate"), Component("mixup")))
    threads: list[str] = []
    real = feed_mod.prefetched

    def counted(*a):  # noqa: ANN002, ANN202
        threads.append("ahead")
        return real(*a)

    monkeypatch.setattr(feed_mod, "prefetched", counted)
    runs = {}
    for ahead in (True, False):
        monkeypatch.setattr(feed_mod, "spare_core", lambda sharing, on=ahead: on)
        r = train_fold(cfg, data, 0, keep_predictions=True)
        runs[ahead] = ([(e.train_loss, e.val_loss, e.val_acc) for e in r.epochs], r.val_probs)
    assert threads == ["ahead", "ahead"]  # two epochs made ahead, none in the run without a spare core
    assert runs[True][0] == runs[False][0]
    np.testing.assert_array_equal(runs[True][1], runs[False][1])


def test_prefetched_on_the_cpu_keeps_order_and_raises_the_threads_error() -> None:
    from ablate.batching import prefetched

    cpu = torch.device("cpu")
    made = [(torch.full((2,), float(i)),) for i in range(7)]
    assert [b[0][0].item() for b in prefetched(iter(made), cpu, depth=2)] == list(range(7))

    def failing():  # noqa: ANN202
        yield made[0]
        raise ValueError("bad landmark file x.parquet")

    got = prefetched(failing(), cpu)
    assert next(got)[0][0].item() == 0
    with pytest.raises(ValueError, match="x.parquet"):
        next(got)
    stopped = prefetched(iter(made), cpu, depth=1)
    next(stopped)
    stopped.close()  # the consumer leaves early: the thread stops (a blocked put is drained)
    assert not any(t.name == "ablate-batches" and t.is_alive() for t in __import__("threading").enumerate())


def test_a_batch_thread_needs_as_many_cores_as_the_step_in_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate import batching

    monkeypatch.setattr(batching, "cpu_cores", lambda: 4)
    monkeypatch.setattr(batching.torch, "get_num_threads", lambda: 1)
    assert batching.spare_core(1) and batching.spare_core(2) and not batching.spare_core(3)
    monkeypatch.setattr(batching.torch, "get_num_threads", lambda: 2)
    assert batching.spare_core(1) and not batching.spare_core(2)
    monkeypatch.setattr(batching.torch, "get_num_threads", lambda: 4)
    assert not batching.spare_core(1)  # the step's threads take every core: batches are made in turn
