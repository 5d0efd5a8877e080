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

Printed: the median over epoch pairs of (monitored epoch) / (unmonitored neighbour) - 1, for
monitoring alone and with ``clip_norm = 1.0`` (clipping needs the norm; it adds the scaling).
Target: monitoring <= 3 % per step.

    python bench/grad_norm.py [--epochs 40]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile

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
    """Switch the gradient monitor off (a no-op per step) in even epochs."""

    def __init__(self) -> None:
        self.real = GradMonitor.before_step

    def on_epoch_start(self, state: gs.TrainState) -> None:
        if state.epoch % 2:
            GradMonitor.before_step = self.real  # type: ignore[method-assign]
        else:
            GradMonitor.before_step = lambda self, state, done: True  # type: ignore[method-assign]

    def on_fit_end(self, state: gs.TrainState) -> None:
        GradMonitor.before_step = self.real  # type: ignore[method-assign]


def paired_cost(name: str, epochs: int, **settings: object) -> tuple[float, list[float], float]:
    """``(median cost, per-pair costs, us/step unmonitored)`` over ``epochs`` epoch pairs."""
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
            GradMonitor.before_step = alternate.real  # type: ignore[method-assign]
    t = [h["time_s"] for h in result.history[2:]]  # epochs 3, 4, ...: (on, off) pairs
    pairs = [on / off - 1 for on, off in zip(t[::2], t[1::2], strict=True)]
    steps = -(-int(w["n"]) // int(w["batch"]))
    return statistics.median(pairs), pairs, statistics.median(t[1::2]) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="epoch pairs per figure")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.epochs} pairs")
    for name in WORKLOADS:
        for label, extra in (("grad_norm", {}), ("+ clip_norm=1", {"clip_norm": 1.0})):
            epochs = min(args.epochs, CNN_PAIRS) if name == "cnn" else args.epochs
            cost, pairs, base = paired_cost(name, epochs, **extra)
            q1, q3 = statistics.quantiles(pairs, n=4)[0], statistics.quantiles(pairs, n=4)[2]
            verdict = (" OK" if cost <= 0.03 else " OVER") if not extra else ""
            print(
                f"{name:>6}: {label:<14} {cost:+.2%} per step "
                f"(pairs' middle half {q1:+.1%} .. {q3:+.1%}; {base:.0f} us/step without){verdict}"
            )
    print("target: grad_norm monitoring <= 3 % per step")


if __name__ == "__main__":
    main()
