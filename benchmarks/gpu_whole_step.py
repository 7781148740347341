"""A training step captured whole as one CUDA graph, written out as a prototype, against the
trainer's step.

    python benchmarks/gpu_whole_step.py [--batch 64] [--frames 64] [--steps 300]
    python benchmarks/gpu_whole_step.py --small      # seconds on a CPU (no capture): keeps it alive in CI

Written for the 24,000 sequences/s target of the GPU throughput issue, before the trainer
captured whole steps (stepgraphs.py): it said how much capturing them would gain (1.70x the
trainer's step at batch 64 on an H100, 2026-11-27). Now it checks that the trainer's whole steps
are as fast as this plain form (1.00x the same day). One batch shape (--batch x --frames, a
frame bucket of graphs.py), the baseline recipe (`full` preset: seed828 features, 1-block
transformer of width 512 with 16 heads, sub-center ArcFace over 250 signs, clipping), in one
process:
- trainer_step: `train.bare_steps`, the trainer's own Step on ready-made device tensors (on CUDA
  its whole steps in graphs);
- radam_step (CUDA): the step below op by op, so that the optimizer's change and the capture's
  can be told apart;
- whole_step: forward, loss, backward, clipping and the optimizer's update in one graph, replayed
  on new inputs copied into its input buffers, the learning rate written into a device tensor
  before each replay (the schedule's values worked out beforehand: its Python is not timed; the
  trainer's step runs its LambdaLR). The optimizer is torch.optim's RAdam with `capturable=True` (its step count
  on the device) and Ranger's betas and eps, with Lookahead's k and alpha applied between replays
  (one multi-tensor lerp and copy every k steps).
bf16 autocast where the GPU has it (fp16 would need a GradScaler, which this prototype does not
capture: it then reports no whole-step figure). Each figure says whether those steps trained
(`*_trained`: the last loss finite, the weights moved; the exit status is 1 if not). Measured in
this order, once each. On a CPU nothing is captured: the step runs op by op (--small), so the
figures there say nothing about graphs. The last line is JSON:
{"trainer_step": seq/s, "radam_step": seq/s, "whole_step": seq/s, "ratio": whole / trainer, ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import torch

from ablate.config import Component, Config
from ablate.device import gpu_name, resolve_amp, resolve_device, use_device
from ablate.graphs import FRAME_BUCKET
from ablate.parts import build_parts
from ablate.spaces import recipe_config
from ablate.train import bare_steps

NUM_CLASSES = 250
INPUTS = 8  # distinct input batches cycled through the replays


def whole_step_rate(cfg: Config, batch: int, frames: int, steps: int, device: torch.device,
                    amp: torch.dtype | None, capture: bool) -> tuple[float, bool]:
    """(sequences/s, trained?) of `steps` training steps of one shape, captured as one graph
    (`capture`, CUDA) or op by op; trained: the last loss is finite and the weights moved."""
    torch.manual_seed(cfg.seed)
    parts = build_parts(cfg, NUM_CLASSES)
    model, head = parts.model.to(device).train(), parts.head.to(device).train()
    params = [*model.parameters(), *head.parameters()]
    start = [p.detach().clone() for p in params]
    hyper = {"lr": 1e-4, "k": 6, "alpha": 0.5, "weight_decay": 0.0, **cfg.optimizer.params}
    lr = torch.tensor(float(hyper["lr"]), device=device) if capture else float(hyper["lr"])
    opt = torch.optim.RAdam(params, lr=lr, betas=(0.95, 0.999), eps=1e-5, weight_decay=float(hyper["weight_decay"]),
                            decoupled_weight_decay=True, foreach=True, capturable=capture)
    slow = [p.detach().clone() for p in params]  # Lookahead's slow weights
    width = int(getattr(parts.features, "out_dim"))
    x = torch.randn(batch, frames, width, device=device)  # the graph's input buffers
    mask = torch.ones(batch, frames, dtype=torch.bool, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    xs = [torch.randn_like(x) for _ in range(INPUTS)]
    ys = [torch.randint_like(y, NUM_CLASSES) for _ in range(INPUTS)]

    def step() -> torch.Tensor:
        ctx = torch.autocast(device.type, dtype=amp, cache_enabled=False) if amp else contextlib.nullcontext()
        with ctx:
            emb = model(x, mask)
        loss = head(emb.float(), y)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        opt.step()
        return loss.detach()

    losses: list[torch.Tensor] = []
    run = _captured(step, opt, losses) if capture else lambda: losses.append(_eager(step, opt))
    k, alpha = int(hyper["k"]), float(hyper["alpha"])

    def one(i: int) -> None:
        x.copy_(xs[i % INPUTS])
        y.copy_(ys[i % INPUTS])
        rate = float(hyper["lr"]) * (0.5 + 0.5 * (i % 100) / 100)  # a schedule's value, worked out beforehand
        if capture:
            lr.fill_(rate)  # one launch
        else:
            for group in opt.param_groups:
                group["lr"] = rate
        run()
        if (i + 1) % k == 0:
            with torch.no_grad():
                live = [p.detach() for p in params]
                torch._foreach_lerp_(slow, live, alpha)
                torch._foreach_copy_(live, slow)

    for i in range(3):  # warm-up replays
        one(i)
    _wait(device)
    t0 = time.perf_counter()
    for i in range(steps):
        one(i)
    _wait(device)
    rate = batch * steps / (time.perf_counter() - t0)
    moved = any(not torch.equal(p.detach(), s) for p, s in zip(params, start))
    return rate, bool(torch.isfinite(losses[-1])) and moved


def _eager(step: Callable[[], torch.Tensor], opt: torch.optim.Optimizer) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    return step()


def _captured(step: Callable[[], torch.Tensor], opt: torch.optim.Optimizer,
              losses: list[torch.Tensor]) -> Callable[[], Any]:
    """The step as a CUDA graph (PyTorch's whole-network capture: warm-up passes on a side stream,
    gradients None before the capture so that the graph's backward writes them); the graph's loss
    (rewritten by every replay) goes into `losses`."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        losses.append(step())
    return graph.replay


def _wait(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--frames", type=int, default=64, help="padded frames (rounded up to graphs.FRAME_BUCKET)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--small", action="store_true", help="a tiny model, batch 16, 20 steps: for a CPU")
    a = ap.parse_args()
    cfg = recipe_config("full")
    if a.small:
        cfg = cfg.replace(model=Component("transformer", {"width": 32, "heads": 4}))
        a.batch, a.frames, a.steps = 16, 32, 20
    device = resolve_device(cfg.device)
    use_device(device)
    amp = resolve_amp(cfg.amp, device)
    a.frames = -(-a.frames // FRAME_BUCKET) * FRAME_BUCKET  # the shape the trainer's graphs see
    capture = device.type == "cuda"
    trainer = bare_steps(cfg, NUM_CLASSES, [(a.batch, a.frames)] * 20, repeats=max(1, a.steps // 20))
    out: dict[str, Any] = {"device": str(device), "gpu": gpu_name(device), "amp": str(amp).replace("torch.", "") if amp else "off",
                           "captured": capture, "batch": a.batch, "frames": a.frames, "steps": a.steps,
                           "trainer_step": round(trainer, 1)}
    ok = True
    if amp is not torch.float16:  # the same steps op by op (the optimizer's change alone), then captured
        for name, captured in (("radam_step", False), ("whole_step", True)) if capture else (("whole_step", False),):
            rate, trained = whole_step_rate(cfg, a.batch, a.frames, a.steps, device, amp, captured)
            out[name], out[f"{name}_trained"] = round(rate, 1), trained
            ok &= trained
        out["ratio"] = round(out["whole_step"] / trainer, 3)
    print(f"batch {a.batch} x {a.frames} frames on {device} {out['gpu']} ({out['amp']}): trainer's step {trainer:.0f} "
          f"sequences/s; RAdam op by op {out.get('radam_step', '-')}; whole step "
          f"{'captured' if capture else 'op by op'} {out.get('whole_step', '-')}")
    print(json.dumps(out))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
