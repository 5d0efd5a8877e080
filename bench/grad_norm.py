"""Per-step cost of gradient-norm monitoring (``[train] grad_norm = true``, the default) over none.

Monitoring launches one ``torch._foreach_norm`` per step and reads the norms back at log lines
(see ``gradstep.callbacks.grad_norm``). Two workloads, each trained by ``gs.Trainer`` with
``grad_norm = false`` and ``true`` in alternating fits within one process (adjacent fits are
compared, so the shared machine's slow drifts cancel), no validation and no checkpoints:

* ``tiny``: bench/overhead.py's tutorial workload — 10,000 random samples, MLP 10-50-2,
  batch 32, SGD (the smallest step there is, so the worst case in relative terms);
* ``mnist``: the MNIST example's model and batch — SimpleNet 784-128-10, batch 64, SGD with
  momentum — on 8,000 random 784-feature samples (no files needed).

For each, the median over rounds of (median epoch time with monitoring) / (without) - 1.
Also shown: ``clip_norm = 1.0`` (the norm is needed anyway; clipping adds the scaling).
Target: <= 3 %.

    python bench/grad_norm.py [--rounds 8] [--epochs 4]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile

import torch

import gradstep as gs
from gradstep.models import MLP, SimpleNet

WORKLOADS = {
    "tiny": dict(n=10_000, features=10, classes=2, batch=32, momentum=0.0),
    "mnist": dict(n=8_000, features=784, classes=10, batch=64, momentum=0.9),
}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "tiny":
        return MLP(input_size=10, hidden=[50], num_classes=2)
    return SimpleNet(input_size=784, hidden_size=128, num_classes=10)


def epoch_time(name: str, epochs: int, **settings: object) -> float:
    w = WORKLOADS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(int(w["n"]), int(w["features"]), generator=g)
    y = torch.randint(0, int(w["classes"]), (int(w["n"]),), generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = gs.Trainer(
            epochs=epochs + 1,
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
            **settings,
        )
        with contextlib.redirect_stdout(io.StringIO()):
            result = trainer.fit(_model(name), train=(x, y))
    return statistics.median(h["time_s"] for h in result.history[1:])  # epoch 1 warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    variants = {"grad_norm": dict(grad_norm=True), "clip_norm=1": dict(clip_norm=1.0)}
    for name, w in WORKLOADS.items():
        steps = -(-int(w["n"]) // int(w["batch"]))
        ratios: dict[str, list[float]] = {v: [] for v in variants}
        base_times = []
        for r in range(args.rounds):
            for variant, extra in variants.items():
                pair = [("off", dict(grad_norm=False)), ("on", extra)]
                if r % 2:
                    pair.reverse()  # alternate which runs first
                t = {label: epoch_time(name, args.epochs, **s) for label, s in pair}
                ratios[variant].append(t["on"] / t["off"] - 1)
                base_times.append(t["off"])
        base = statistics.median(base_times) / steps * 1e6
        for variant, values in ratios.items():
            cost = statistics.median(values)
            verdict = "" if variant != "grad_norm" else (" OK" if cost <= 0.03 else " OVER")
            print(
                f"{name:>6}: {variant:<12} costs {cost:+.2%} per step over grad_norm = false "
                f"({base:.0f} us/step without; rounds {min(values):+.1%} .. {max(values):+.1%})"
                f"{verdict if variant == 'grad_norm' else ''}"
            )
    print("target: grad_norm monitoring <= 3 % per step")


if __name__ == "__main__":
    main()
