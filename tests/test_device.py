"""Where a fold trains and at what precision, decided from hardware facts (faked here: no GPU in CI)."""

from __future__ import annotations

import os

import pytest
import torch

from ablate import device as dev
from ablate.errors import UserError


def test_workers_are_placed_on_gpus_in_turn() -> None:
    assert dev.place(None, 0).devices == ("cpu",)
    three = dev.place(None, 3)
    assert [three.of(i) for i in range(5)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert [dev.place("0,0,1", 2).of(i) for i in range(4)] == ["cuda:0", "cuda:0", "cuda:1", "cuda:0"]
    assert dev.place("cuda:1, cpu", 2).devices == ("cuda:1", "cpu")
    with pytest.raises(UserError, match=r"--devices: cuda:5 is not on this machine \(2 GPU\(s\)\)"):
        dev.place("5", 2)
    with pytest.raises(UserError, match="--devices: 'gpu' is not a device"):
        dev.place("gpu", 2)


def test_a_worker_trains_where_it_is_placed(synth_cache, spaces, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With two (fake) GPUs, worker 1's trials resolve to cuda:1: the config says so, and why."""
    from ablate.resolve import resolve
    from ablate.spaces import load_space
    from ablate.study.objective import Objective
    from ablate.study.setup import new_meta

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    placed = dev.place(None, torch.cuda.device_count()).of(1)
    space = load_space("tiny")
    from ablate.data.cache import Cache

    meta = new_meta(space, "smoke", Cache(synth_cache), 1, "grouped", "mem")
    objective = Objective(space, meta, None, Cache(synth_cache), False, lambda *a: None, placed, sharing=2)  # type: ignore[arg-type]
    r = resolve(space.base, "smoke", space.arms["ce"], settings=objective.settings)
    assert (placed, r.config.device, r.sources["device"]) == ("cuda:1", "cuda:1", "run setting")


def test_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))  # a T4: bf16 only emulated
    assert dev.resolve_amp("auto", gpu) is torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))  # an H100
    assert dev.resolve_amp("auto", gpu) is torch.bfloat16
    assert dev.resolve_amp("auto", gpu, rnn=True) is torch.float16  # an LSTM: fp16 with a GradScaler
    assert dev.resolve_amp("bf16", gpu, rnn=True) is torch.float16
    assert dev.resolve_amp("bf16", torch.device("cpu"), rnn=True) is torch.bfloat16
    assert dev.resolve_amp("off", gpu) is None


def test_deterministic_is_an_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """It sets cuBLAS's workspace before cuBLAS starts, and warns where an earlier fold of this
    process trained on the same GPU without it (cuBLAS may have started there); no GPU is touched."""
    import warnings

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(dev, "_CUBLAS_STARTED", set())
    gpu0, gpu1 = torch.device("cuda:0"), torch.device("cuda:1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a first fold, deterministic from the start: no warning
            dev.set_deterministic(True, gpu0)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        dev.set_deterministic(False, gpu0)
        assert not torch.are_deterministic_algorithms_enabled()
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
        dev.set_deterministic(False, gpu0)  # a fold on cuda:0 without the setting
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dev.set_deterministic(True, gpu1)  # another GPU: its cuBLAS has not started
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
        with pytest.warns(RuntimeWarning, match="earlier fold in this process trained on cuda:0 without"):
            dev.set_deterministic(True, gpu0)
    finally:
        dev.set_deterministic(False, torch.device("cpu"))


def test_folds_record_their_device_and_a_mixed_precision_study_is_flagged(tmp_path) -> None:
    from optuna.trial import TrialState

    from ablate.report.analysis import analyze
    from ablate.study import records
    from ablate.study.records import FoldScore
    from studies import meta, new_study

    study = new_study("mixed", meta("mixed", ["ce", "focal"]))
    for arm, amp, graphs in (("ce", "off", ""), ("focal", "bfloat16", "on")):
        folds = [FoldScore(k, 0, k, 0.5, n_train=96, n_val=24, device="cuda:0", gpu="NVIDIA T4", amp=amp,
                           graphs={4: "failed: RuntimeError: x", 3: "on, some shapes without (device memory)",
                                   2: "whole steps"}.get(k, graphs)
                           if graphs else "") for k in range(5)]
        study.add_trial(records.made_trial(TrialState.COMPLETE, arm, folds))
    a = analyze(study)
    assert a["arms"][0]["trained_on"] == ["cuda:0 (NVIDIA T4) at off"]
    assert a["arms"][1]["trained_on"] == ["cuda:0 (NVIDIA T4) (CUDA graphs failed) at bfloat16",
                                          "cuda:0 (NVIDIA T4) with CUDA graphs (some shapes without (device memory)) at bfloat16",
                                          "cuda:0 (NVIDIA T4) with CUDA graphs (whole steps) at bfloat16",
                                          "cuda:0 (NVIDIA T4) with CUDA graphs at bfloat16"]
    assert any("different precisions (bfloat16, off)" in w for w in a["warnings"])
    stored = records.trial_records(study, records.read_meta(study))[1].folds
    assert [f.graphs[:2] for f in stored] == ["on", "on", "wh", "on", "fa"] and stored[4].graphs == "failed: RuntimeError: x"


def test_compiled_gives_the_eager_numbers_without_inductors_tiling_analysis() -> None:
    """`compile: true` goes through device.compiled, which switches off the Inductor analysis that
    failed on an H100 (torch 2.11); the compiled function computes what the eager one does."""
    import torch._inductor.config as inductor

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x * 2.0, dim=-1).sum(0)

    x = torch.randn(5, 7)
    got = dev.compiled(fn, dynamic=True)(x)
    torch.testing.assert_close(got, fn(x))
    if hasattr(inductor.triton, "coalesce_tiling_analysis"):
        assert inductor.triton.coalesce_tiling_analysis is False


def test_a_cuda_fold_turns_cudnn_attention_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuDNN's fused attention builds a graph per new shape (219 ms a call on an H100), and the
    trainer's batches keep bringing new frame counts: a fold on CUDA turns it off. No GPU here, so
    the device switch itself is replaced; the CPU leaves the setting alone."""
    before = torch.backends.cuda.cudnn_sdp_enabled()
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        dev.use_device(torch.device("cpu"))
        assert torch.backends.cuda.cudnn_sdp_enabled()
        dev.use_device(torch.device("cuda:1"))
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


def test_cpu_folds_keep_freed_memory_unless_the_user_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc's thresholds are set once per process (mallopt), not where the user set them in the
    environment, and nothing happens without glibc."""
    calls: list[tuple[int, int]] = []
    limit = {"mmap": dev.MMAP_THRESHOLD}

    class Libc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return int(param != dev.M_MMAP_THRESHOLD or value <= limit["mmap"])

    monkeypatch.setattr(dev.ctypes, "CDLL", lambda name: Libc())
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    dev.keep_freed_memory.cache_clear()
    try:
        assert dev.keep_freed_memory() and dev.keep_freed_memory()  # once per process
        assert calls == [(dev.M_MMAP_THRESHOLD, dev.MMAP_THRESHOLD), (dev.M_TRIM_THRESHOLD, dev.TRIM_THRESHOLD)]
        dev.keep_freed_memory.cache_clear()
        monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
        assert not dev.keep_freed_memory() and len(calls) == 2  # the user's own setting stays
        dev.keep_freed_memory.cache_clear()
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")

        def no_glibc(name: str) -> None:
            raise OSError("libc.so.6: cannot open shared object file")

        monkeypatch.setattr(dev.ctypes, "CDLL", no_glibc)
        assert not dev.keep_freed_memory()
        # a glibc that refuses an mmap threshold over its documented 32 MiB gets that instead
        monkeypatch.setattr(dev.ctypes, "CDLL", lambda name: Libc())
        limit["mmap"], calls[:] = dev.MMAP_THRESHOLD_MAX, []
        dev.keep_freed_memory.cache_clear()
        assert dev.keep_freed_memory()
        assert calls == [(dev.M_MMAP_THRESHOLD, dev.MMAP_THRESHOLD), (dev.M_MMAP_THRESHOLD, dev.MMAP_THRESHOLD_MAX),
                         (dev.M_TRIM_THRESHOLD, dev.TRIM_THRESHOLD)]
    finally:
        dev.keep_freed_memory.cache_clear()
