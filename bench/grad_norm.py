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

Then the monitor against its floor, the one call monitoring cannot do without: one bare
``torch._foreach_norm`` on the same gradients, in the same place (after ``backward``, before
``optimizer.step()``), in the same run. After every ``BARE_EVERY`` pairs (and after the last)
the run trains one *bare* epoch, not part of any pair, in which the monitor's per-step call is
replaced by exactly that, as a hand-written loop writes it:
``torch._foreach_norm([p.grad for p in params])``. The list is inside the timing, on both
sides: the first read of each ``.grad`` after ``backward`` is a good part of it (it makes the
Python object of each gradient autograd made: here 2.5 us for the ``tiny`` MLP's 4, 30 us
for the ``cnn``'s 12; a second read costs a tenth), and whoever reads first saves that much
in ``optimizer.step()``, which reads them too. Both sides are timed alike (a ``perf_counter``
either side of the call) and compared like for like: the median of the monitor's per-step
calls plus its reads (the steps' norms stacked into totals, one sync, the health rules: a few
per epoch) spread over the epoch's steps, against the median bare call. Printed beside: the
same from means per epoch (what *counted* uses; a descheduled call weighs in it), and the bare
call timed ``TIGHT_REPS`` times in a row at the end of each bare epoch on its first step's
gradients — cheaper than in the step (its code and data are cold after ``backward``, and the
gradients' Python objects exist by then), so a floor no step gets. With ``clip_norm = 1.0``
the bare epochs call ``torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)`` instead —
what a hand-written loop calls to clip, the norm included — printed for reference.
Target: the monitor's time per step <= 1.3x one bare ``torch._foreach_norm``.

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
BARE_EVERY = 4  # pairs between bare epochs
TIGHT_REPS = 50  # bare calls in a row at the end of each bare epoch
FLOOR_TARGET = 1.3


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "tiny":
        return MLP(input_size=10, hidden=[50], num_classes=2)
    if name == "cnn":
        return CNN(in_channels=1, num_classes=10, image_size=28)
    return SimpleNet(input_size=784, hidden_size=128, num_classes=10)


def schedule(pairs: int) -> list[str]:
    """Each epoch's kind, first to last: ``on`` (monitored), ``off`` (a no-op per step),
    ``bare`` (the bare reference call per step). One warm-up pair, then ``pairs`` pairs with
    a bare epoch after every ``BARE_EVERY`` of them and after the last."""
    kinds = ["on", "off"]
    for i in range(pairs):
        kinds += ["on", "off"]
        if (i + 1) % BARE_EVERY == 0 or i == pairs - 1:
            kinds.append("bare")
    return kinds


def _bare(params: list[torch.nn.Parameter], clip: float | None) -> float:
    """Seconds of one bare reference call on ``params``' gradients, as a hand-written loop
    writes it: ``torch._foreach_norm([p.grad for p in params])``, or with ``clip``
    ``clip_grad_norm_(params, clip, foreach=True)`` (which reads ``.grad`` itself)."""
    t0 = time.perf_counter()
    if clip is None:
        torch._foreach_norm([p.grad for p in params])
        return time.perf_counter() - t0
    torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
    return time.perf_counter() - t0


class Alternate(gs.Callback):
    """Sets each epoch's kind (see :func:`schedule`) and times, per epoch: the monitor's
    per-step calls and its reads (``flush``) in monitored epochs, the bare reference call per
    step in bare epochs and, at a bare epoch's end (its time taken), ``TIGHT_REPS`` of it in a
    row on stand-in parameters holding the epoch's first gradients (that step is over:
    scaling them changes nothing that training uses)."""

    def __init__(self, kinds: list[str], clip: float | None = None) -> None:
        self.kinds = kinds
        self.clip = clip
        self.real = GradMonitor.before_step
        self.real_flush = GradMonitor.flush
        self.spent: dict[int, float] = {}  # epoch -> seconds inside the monitor
        self.calls: dict[int, list[float]] = {}  # epoch -> seconds of each per-step call
        self.reads: dict[int, float] = {}  # epoch -> seconds in its reads (flush)
        self.bare: dict[int, list[float]] = {}  # bare epoch -> seconds of each bare call
        self.tight: dict[int, list[float]] = {}  # bare epoch -> the calls in a row
        self.kept: list[torch.Tensor] | None = None  # a bare epoch's first gradients
        self.epoch = 0
        bench = self

        def timed_step(monitor: GradMonitor, state: gs.TrainState, done: list) -> bool:
            t0 = time.perf_counter()
            try:
                return bench.real(monitor, state, done)
            finally:
                dt = time.perf_counter() - t0
                bench.spent[bench.epoch] += dt
                bench.calls[bench.epoch].append(dt)

        def bare_step(monitor: GradMonitor, state: gs.TrainState, done: list) -> bool:
            calls = bench.bare[bench.epoch]
            calls.append(_bare(monitor.params, bench.clip))
            if len(calls) == 1:  # kept for the calls in a row (the loop drops them)
                bench.kept = [p.grad for p in monitor.params]
            return True

        def timed_flush(monitor: GradMonitor, state: gs.TrainState) -> None:
            t0 = time.perf_counter()
            try:
                bench.real_flush(monitor, state)
            finally:
                dt = time.perf_counter() - t0
                bench.spent[bench.epoch] += dt
                bench.reads[bench.epoch] += dt

        self.steps = {"on": timed_step, "bare": bare_step, "off": lambda m, s, d: True}
        self.timed_flush = timed_flush

    def on_epoch_start(self, state: gs.TrainState) -> None:
        self.epoch = e = state.epoch
        self.spent[e] = self.reads[e] = 0.0
        self.calls[e], self.bare[e] = [], []
        GradMonitor.flush = self.timed_flush  # type: ignore[method-assign]
        GradMonitor.before_step = self.steps[self.kinds[e - 1]]  # type: ignore[method-assign]

    def on_epoch_end(self, state: gs.TrainState) -> None:
        if self.kept is None:
            return
        params = []
        for g in self.kept:
            p = torch.nn.Parameter(torch.empty_like(g))
            p.grad = g
            params.append(p)
        self.tight[state.epoch] = [_bare(params, self.clip) for _ in range(TIGHT_REPS)]
        self.kept = None

    def restore(self) -> None:
        GradMonitor.before_step = self.real  # type: ignore[method-assign]
        GradMonitor.flush = self.real_flush  # type: ignore[method-assign]

    def on_fit_end(self, state: gs.TrainState) -> None:
        self.restore()


def paired_cost(name: str, pairs: int, **settings: object) -> dict[str, Any]:
    """Over ``pairs`` epoch pairs: ``cost`` (median of monitored / unmonitored epoch - 1),
    ``pairs`` (each pair's), ``us`` (us/step unmonitored) and ``counted`` (median over
    monitored epochs of the time spent inside the monitor per step, over ``us``). Against the
    bare reference call (see the module docstring), in us: ``call_us`` (the monitor's median
    per-step call), ``reads_us`` (its reads per step, median over epochs), ``bare_us`` (the
    median bare call in the step), ``ratio`` (``(call_us + reads_us) / bare_us``); from
    means per epoch ``inside_us`` (``counted`` in us), ``bare_mean_us`` and ``mean_ratio``;
    ``tight_us`` (the median bare call in a row) and ``bare_calls`` (how many were timed)."""
    w = WORKLOADS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(int(w["n"]), int(w["features"]), generator=g)
    y = torch.randint(0, int(w["classes"]), (int(w["n"]),), generator=g)
    kinds = schedule(pairs)
    clip = settings.get("clip_norm")
    alternate = Alternate(kinds, float(clip) if isinstance(clip, (int, float)) else None)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = gs.Trainer(
            epochs=len(kinds),
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
    t = [h["time_s"] for h in result.history]  # t[e - 1] is epoch e's
    # (on, off) epochs next to each other, after the warm-up pair (epochs 1 and 2)
    on = [e for e in range(3, len(kinds)) if kinds[e - 1] == "on" and kinds[e] == "off"]
    ratios = [t[e - 1] / t[e] - 1 for e in on]
    bare = [e for e in range(1, len(kinds) + 1) if kinds[e - 1] == "bare"]
    steps = -(-int(w["n"]) // int(w["batch"]))
    per_step = statistics.median(t[e] for e in on) / steps
    inside = [alternate.spent[e] / steps for e in on]
    call = statistics.median(c for e in on for c in alternate.calls[e])
    reads = statistics.median(alternate.reads[e] / steps for e in on)
    bare_call = statistics.median(c for e in bare for c in alternate.bare[e])
    bare_mean = statistics.median(statistics.fmean(alternate.bare[e]) for e in bare)
    return {
        "cost": statistics.median(ratios),
        "pairs": ratios,
        "us": per_step * 1e6,
        "counted": statistics.median(inside) / per_step,
        "call_us": call * 1e6,
        "reads_us": reads * 1e6,
        "bare_us": bare_call * 1e6,
        "ratio": (call + reads) / bare_call,
        "inside_us": statistics.median(inside) * 1e6,
        "bare_mean_us": bare_mean * 1e6,
        "mean_ratio": statistics.median(inside) / bare_mean,
        "tight_us": statistics.median(c for e in bare for c in alternate.tight[e]) * 1e6,
        "bare_calls": sum(len(alternate.bare[e]) for e in bare),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="epoch pairs per figure")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.epochs} pairs")
    for name in WORKLOADS:
        for label, extra in (("grad_norm", {}), ("+ clip_norm=1", {"clip_norm": 1.0})):
            pairs = min(args.epochs, CNN_PAIRS) if name == "cnn" else args.epochs
            r = paired_cost(name, pairs, **extra)
            q1, _, q3 = statistics.quantiles(r["pairs"], n=4) if pairs > 1 else [r["cost"]] * 3
            verdict = (" OK" if r["cost"] <= 0.03 else " OVER") if not extra else ""
            print(
                f"{name:>6}: {label:<14} {r['cost']:+.2%} per step measured "
                f"(pairs' middle half {q1:+.1%} .. {q3:+.1%}), {r['counted']:.2%} counted; "
                f"{r['us']:.0f} us/step without{verdict}"
            )
            if extra:
                bare, target = "clip_grad_norm_(foreach=True)", "(for reference)"
            else:
                ok = "OK" if r["ratio"] <= FLOOR_TARGET else "OVER"
                bare, target = "torch._foreach_norm", f"(target <= {FLOOR_TARGET}) {ok}"
            print(
                f"{name:>6}: {label:<14} {r['call_us'] + r['reads_us']:.1f} us/step inside "
                f"the monitor (median call {r['call_us']:.1f} + reads {r['reads_us']:.1f}) vs "
                f"{r['bare_us']:.1f} us for one bare {bare} on the same gradients in the step "
                f"(median of {r['bare_calls']}): {r['ratio']:.2f}x {target}; from means per "
                f"epoch {r['inside_us']:.1f} vs {r['bare_mean_us']:.1f} us: "
                f"{r['mean_ratio']:.2f}x; the bare call in a row {r['tight_us']:.1f} us"
            )
    print("target: grad_norm monitoring <= 3 % per step")
    print(
        f"target: the monitor's time per step <= {FLOOR_TARGET}x one bare torch._foreach_norm "
        "on the same gradients"
    )


if __name__ == "__main__":
    main()
