"""Per-step cost of gradient-norm monitoring (``[train] grad_norm = true``, the default) over none.

Monitoring launches one ``torch._foreach_norm`` per step and reads the norms back at log lines
(see ``gradstep.callbacks.grad_norm``). Each workload is trained by ``gs.Trainer`` (no
validation, no checkpoints) with the monitor switched off in every other epoch — its per-step
call replaced by a no-op, which is what ``grad_norm = false`` runs — so each monitored epoch is
compared with the unmonitored epoch next to it, in one process (the shared machine's drifts
cancel; separate runs seconds apart differ by more than the effect):

* ``tiny``: bench/overhead.py's tutorial workload — 10,000 random samples, MLP 10-50-2,
  batch 32, SGD (the smallest step there is, so the worst case in relative terms);
* ``mnist``: the MNIST example's model and batch — SimpleNet 784-128-10, batch 64, SGD with
  momentum — on 8,000 random 784-feature samples (no files needed);
* ``cnn``: the zoo's conv net (two 3x3 conv + BatchNorm + pool blocks, 16 and 32 channels)
  on 2,048 random 28x28 images, batch 64, SGD with momentum: a step of real work (at most
  ``CNN_PAIRS`` pairs: its epochs are longer).

Printed, for monitoring alone and with ``clip_norm = 1.0`` (clipping needs the norm; it adds
the scaling): *measured*, the median over epoch pairs of (monitored epoch) / (unmonitored
neighbour) - 1 — the whole effect, but on this shared 2-core machine a pair's ratio scatters by
several percent, so a 1 % effect is hard to see; and *counted*, the time spent inside the
monitor (its per-step call and its reads at log lines) per step, over the unmonitored step —
exact, but blind to what the extra work does to the caches of the code around it.
Target: monitoring <= 3 % per step.

    python bench/grad_norm.py [--epochs 40]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from typing import Any

import torch

import gradstep as gs
from gradstep.callbacks.grad_norm import GradMonitor
from gradstep.models import CNN, MLP, SimpleNet

WORKLOADS = {
    "tiny": dict(n=10_000, features=10, classes=2, batch=32, momentum=0.0),
    "mnist": dict(n=8_000, features=784, classes=10, batch=64, momentum=0.9),
    "cnn": dict(n=2_048, features=784, classes=10, batch=64, momentum=0.9),
}
CNN_PAIRS = 12


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "tiny":
        return MLP(input_size=10, hidden=[50], num_classes=2)
    if name == "cnn":
        return CNN(in_channels=1, num_classes=10, image_size=28)
    return SimpleNet(input_size=784, hidden_size=128, num_classes=10)


class Alternate(gs.Callback):
    """Switch the gradient monitor off (a no-op per step) in even epochs, and time what it does
    in the odd ones: its per-step call and its reads (``flush``), per epoch."""

    def __init__(self) -> None:
        self.real = GradMonitor.before_step
        self.real_flush = GradMonitor.flush
        self.spent: dict[int, float] = {}  # epoch -> seconds inside the monitor
        self.epoch = 0
        bench = self

        def timed_step(monitor: GradMonitor, state: gs.TrainState, done: list) -> bool:
            t0 = time.perf_counter()
            try:
                return bench.real(monitor, state, done)
            finally:
                bench.spent[bench.epoch] += time.perf_counter() - t0

        def timed_flush(monitor: GradMonitor, state: gs.TrainState) -> None:
            t0 = time.perf_counter()
            try:
                bench.real_flush(monitor, state)
            finally:
                bench.spent[bench.epoch] += time.perf_counter() - t0

        self.timed_step, self.timed_flush = timed_step, timed_flush

    def on_epoch_start(self, state: gs.TrainState) -> None:
        self.epoch = state.epoch
        self.spent[state.epoch] = 0.0
        GradMonitor.flush = self.timed_flush  # type: ignore[method-assign]
        if state.epoch % 2:
            GradMonitor.before_step = self.timed_step  # type: ignore[method-assign]
        else:
            GradMonitor.before_step = lambda self, state, done: True  # type: ignore[method-assign]

    def restore(self) -> None:
        GradMonitor.before_step = self.real  # type: ignore[method-assign]
        GradMonitor.flush = self.real_flush  # type: ignore[method-assign]

    def on_fit_end(self, state: gs.TrainState) -> None:
        self.restore()


def paired_cost(name: str, epochs: int, **settings: object) -> dict[str, Any]:
    """Over ``epochs`` epoch pairs: ``cost`` (median of monitored / unmonitored epoch - 1),
    ``pairs`` (each pair's), ``us`` (us/step unmonitored) and ``counted`` (median over
    monitored epochs of the time spent inside the monitor per step, over ``us``)."""
    w = WORKLOADS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(int(w["n"]), int(w["features"]), generator=g)
    y = torch.randint(0, int(w["classes"]), (int(w["n"]),), generator=g)
    alternate = Alternate()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = gs.Trainer(
            epochs=2 * epochs + 2,
            batch_size=w["batch"],
            optimizer="sgd",
            lr=0.01,
            momentum=w["momentum"],
            val_split=0.0,
            normalize=False,
            device="cpu",
            run_dir=tmp,
            checkpoint_every="never",
            progress=False,
            plots=False,
            callbacks=[alternate],
            **settings,
        )
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                result = trainer.fit(_model(name), train=(x, y))
        finally:
            alternate.restore()
    t = [h["time_s"] for h in result.history[2:]]  # epochs 3, 4, ...: (on, off) pairs
    pairs = [on / off - 1 for on, off in zip(t[::2], t[1::2], strict=True)]
    steps = -(-int(w["n"]) // int(w["batch"]))
    per_step = statistics.median(t[1::2]) / steps
    inside = [alternate.spent[e] / steps for e in range(3, 2 * epochs + 3, 2)]
    return {
        "cost": statistics.median(pairs),
        "pairs": pairs,
        "us": per_step * 1e6,
        "counted": statistics.median(inside) / per_step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="epoch pairs per figure")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.epochs} pairs")
    for name in WORKLOADS:
        for label, extra in (("grad_norm", {}), ("+ clip_norm=1", {"clip_norm": 1.0})):
            epochs = min(args.epochs, CNN_PAIRS) if name == "cnn" else args.epochs
            r = paired_cost(name, epochs, **extra)
            q1, _, q3 = statistics.quantiles(r["pairs"], n=4)
            verdict = (" OK" if r["cost"] <= 0.03 else " OVER") if not extra else ""
            print(
                f"{name:>6}: {label:<14} {r['cost']:+.2%} per step measured "
                f"(pairs' middle half {q1:+.1%} .. {q3:+.1%}), {r['counted']:.2%} counted; "
                f"{r['us']:.0f} us/step without{verdict}"
            )
    print("target: grad_norm monitoring <= 3 % per step")


if __name__ == "__main__":
    main()
