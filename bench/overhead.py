"""Per-step overhead of gradstep against the fastest hand-written PyTorch loop.

The tutorial workload: N = 10,000 random samples, 10 features, 2 classes, an MLP 10-50-2,
batch 32, SGD lr 0.01. In one process, warmed up, alternating rounds, we time each epoch of

* ``hand``: a hand-written loop that slices a pre-shuffled copy of the tensors (the fastest
  plain-PyTorch loop: zero_grad, forward, loss, backward, step; nothing else);
* ``gradstep``: ``gs.Trainer(...).fit`` with its defaults (progress lines every 50 steps,
  metrics.jsonl, train loss/accuracy tracked on the device), no validation split, no
  checkpoints and no gradient-norm monitoring: this compares loops doing the same work (the
  hand-written one saves nothing and measures no gradient); what per-epoch checkpoints add is
  ``bench/checkpoint.py``'s figure, what monitoring adds ``bench/grad_norm.py``'s;
* ``dataloader``: the classic ``TensorDataset`` + ``DataLoader(shuffle=True)`` loop, for reference.

The reference loops run inside a callback after each gradstep epoch (outside gradstep's own
epoch timing), so each gradstep epoch is paired with a hand-written epoch run moments later. We
print each loop's median time per step, and the median over pairs of gradstep / hand.
Target: <= 1.05.

    python bench/overhead.py [--epochs 30]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import gradstep as gs

N, FEATURES, CLASSES, HIDDEN, BATCH, LR = 10_000, 10, 2, 50, 32, 0.01


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))


class HandLoop:
    """The hand-written loop, one epoch per call, on its own model and optimizer."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.model = make_model(0)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.criterion = nn.CrossEntropyLoss()

    def epoch(self) -> float:
        model, optimizer, criterion = self.model, self.optimizer, self.criterion
        t0 = time.perf_counter()
        perm = torch.randperm(N)
        xs, ys = self.x[perm], self.y[perm]
        for i in range(0, N, BATCH):
            xb, yb = xs[i : i + BATCH], ys[i : i + BATCH]
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - t0


class DataLoaderLoop(HandLoop):
    """The classic TensorDataset + DataLoader(shuffle=True) loop."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__(x, y)
        self.loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)

    def epoch(self) -> float:
        model, optimizer, criterion = self.model, self.optimizer, self.criterion
        t0 = time.perf_counter()
        for xb, yb in self.loader:
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - t0


class Interleave(gs.Callback):
    """After each gradstep epoch (whose time is already recorded), run one epoch of each
    reference loop, so every gradstep epoch is paired with reference epochs run under the same
    machine conditions. Shared machines are noisy; pairing is what makes the ratio stable."""

    def __init__(self, loops: dict[str, HandLoop]) -> None:
        self.loops = loops
        self.times: dict[str, list[float]] = {name: [] for name in loops}

    def on_epoch_end(self, state: gs.TrainState) -> None:
        names = list(self.loops)
        if state.epoch % 2:  # alternate the order of the references too
            names.reverse()
        for name in names:
            self.times[name].append(self.loops[name].epoch())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="paired epochs to time")
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(N, FEATURES)
    y = torch.randint(0, CLASSES, (N,))
    steps = -(-N // BATCH)
    inter = Interleave({"hand": HandLoop(x, y), "dataloader": DataLoaderLoop(x, y)})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = gs.Trainer(
            epochs=args.epochs + 1,
            batch_size=BATCH,
            optimizer="sgd",
            lr=LR,
            val_split=0.0,
            normalize=False,
            device="cpu",
            run_dir=tmp,
            callbacks=[inter],
            checkpoint_every="never",  # the loop's cost; bench/checkpoint.py measures saving
            grad_norm=False,  # the hand loop takes no norm; bench/grad_norm.py measures it
            plots=False,
        )
        with contextlib.redirect_stdout(io.StringIO()):  # progress lines written, not shown
            result = trainer.fit(make_model(0), train=(x, y))
    times = {"gradstep": [h["time_s"] for h in result.history], **inter.times}
    times = {k: v[1:] for k, v in times.items()}  # the first epoch of each is warm-up
    per_step = {k: statistics.median(v) / steps * 1e6 for k, v in times.items()}
    paired = statistics.median(g / h for g, h in zip(times["gradstep"], times["hand"], strict=True))
    print(
        f"workload: N={N}, MLP {FEATURES}-{HIDDEN}-{CLASSES}, batch {BATCH}, SGD lr {LR}, "
        f"{steps} steps/epoch, {args.epochs} paired epochs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    for name in ("hand", "gradstep", "dataloader"):
        us = per_step[name]
        print(f"{name:>11}: {us:7.1f} us/step  ({us / per_step['hand']:.3f}x hand, median epoch)")
    verdict = "OK" if paired <= 1.05 else "ABOVE TARGET"
    print(
        f"gradstep / hand-written loop (median of paired epochs): {paired:.3f}x "
        f"(target <= 1.05) {verdict}"
    )


if __name__ == "__main__":
    main()
