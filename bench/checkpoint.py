"""What checkpoints cost: save and load times, and the share of training time they take.

1. Save and load, for the MNIST simplenet (784-128-10, SGD with momentum) and a 10M-parameter
   MLP (1024-3000-2300-10, Adam: weights + two moments = 3 × 40 MB), each saved by the
   trainer's own :class:`~gradstep.checkpoint.snapshot.RunSnapshot` (with an empty config and
   fingerprint) and a synchronous :class:`~gradstep.checkpoint.writer.CheckpointWriter`
   (``keep=2``), after three warm-up saves: from then on each is written into the pruned
   checkpoint's recycled directory, as in a long run. *Snapshot* is what the training thread
   pays (safetensors bytes of weights and optimizer, JSON of the rest, the finiteness check);
   *write* is the background thread's part (hash, write each file, manifest, rename, sync,
   links, pruning); *load* is verify (SHA-256 of every file) + rebuild the model + read the
   weights and optimizer state. Medians of ``--repeats`` rounds.

   The same rounds time the floor a checkpoint cannot beat: SHA-256 + write + sync of the same
   bytes and nothing else — the files of the last warm-up checkpoint (its snapshot's files and
   its manifest, checked against the sizes of the files in its directory: both counts are
   printed), each hashed and written with plain ``os.write`` over a file of the same name in a
   folder beside the checkpoints (same filesystem; overwritten in place, as the writer
   overwrites a recycled directory's files, so no directory entry changes and no directory
   needs a sync), then made durable as the writer makes them: one ``syncfs`` on Linux (the
   writer's one flush for all its files and the rename), elsewhere an ``fsync`` of each file
   (the writer's, less its two directory syncs). One ``fsync`` per file is timed too and
   printed for reference: on Linux it is dearer for several files than one ``syncfs``, so it is
   no floor. The checkpoint's cost compared with it is the whole work of one checkpoint —
   snapshot + serialise + hash + write + sync, and the rename, links and pruning — i.e. the
   wall time of one synchronous save (snapshot + write above), timed the same way. Each round
   times one save and one floor, the floor first in every other round; the ratio is the median
   of the rounds' ratios. Target: <= 1.5x. (In training the write runs on its own thread, so
   what the training thread waits for is the snapshot alone: see 2.)
2. The MNIST example (``examples/mnist_simplenet.toml``, on ``../shared/data/mnist``: 8,000
   training images, so an epoch is only ~0.15-0.2 s and a checkpoint every epoch is frequent):
   the share of training time per-epoch checkpointing costs. Two parts:

   * *blocking*: the time ``save`` holds the training thread (the snapshot), timed directly;
   * *background*: how much the training steps slow down while the writer thread works. Each
     run checkpoints after every odd epoch only; each even epoch, whose start the write
     overlaps, is compared with the mean of its two odd neighbours, which overlap none (within
     one run, so the shared machine's drifts cancel; whole runs seconds apart vary by +-20 %
     here). What is compared is the time from the end of the previous epoch's hooks (the
     checkpointer's, the last) to the end of the epoch's first ``--window`` (10) steps: every
     write has finished by then (the bench checks and says so), and over that span the
     comparison is about five times less noisy than over the whole epoch. Each round also
     trains a *control* run with the same instrumentation and no checkpoint, whose even-odd
     difference (how unlike the epochs are without any write) is subtracted.

   Both are averaged over every checkpoint of the runs (the first ones, into new directories,
   included): the share of training time is a mean, and these costs are skewed (a slow sync
   now and then), so the medians, printed too, would understate it. The standard error comes
   from the spread of the runs' means.
   The whole-epoch difference is printed as a cross-check, and the writer thread's CPU time is
   counted too: blocking + writer CPU is what a checkpoint costs if every cycle the writer uses
   is taken from training (both cores busy). Target: <= 2 %.
3. The same cost per checkpoint (blocking + background, in ms) against an epoch of the example at
   the size of MNIST's real training split, which is not available offline: the 10,000 shared
   images repeated to 60,000 (48,000 train, 12,000 validate, as ``val_split = 0.2`` splits the
   real files), timed without checkpoints. A checkpoint costs the same whatever the data's size;
   only the epoch it is compared with is longer.

    python bench/checkpoint.py [--repeats 9] [--rounds 5] [--epochs 36] [--window 10]
                               [--full-epochs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import statistics
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gradstep as gs
from gradstep.callbacks.checkpoint import Checkpointer
from gradstep.checkpoint.files import _SYNCFS, MANIFEST
from gradstep.checkpoint.load import load_for_inference
from gradstep.checkpoint.snapshot import RunSnapshot
from gradstep.checkpoint.writer import CheckpointWriter, Job
from gradstep.data.idx import read_idx
from gradstep.models import MLP, SimpleNet
from gradstep.state import TrainState

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
WARMUP_SAVES = 3  # with keep=2, the 4th save is the first into a recycled directory
FLOOR_TARGET = 1.5


def _model_and_optimizer(kind: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, dict]:
    if kind == "simplenet":
        args = {"input_size": 784, "hidden_size": 128, "num_classes": 10}
        model = SimpleNet(**args)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(64, 784)
    else:
        args = {"input_size": 1024, "hidden": [3000, 2300], "num_classes": 10}
        model = MLP(**args)
        opt = torch.optim.Adam(model.parameters())
        x = torch.randn(64, 1024)
    model(x).sum().backward()
    opt.step()  # optimizer state exists, as in a real checkpoint
    name = "simplenet" if kind == "simplenet" else "mlp"
    return model, opt, {"name": name, "args": args, "task": "multiclass", "input": {}}


def floor_write(files: dict[str, bytes], folder: Path, fsync_each: bool = False) -> float:
    """Seconds to SHA-256, write and make durable ``files`` (name -> bytes) in ``folder``,
    nothing else: each file's digest, its bytes written with plain ``os.write`` over the
    existing file of that name (in place: no directory entry changes), then one ``syncfs``
    of the filesystem — or, with ``fsync_each`` or where there is no ``syncfs``, an ``fsync``
    of each file. Run it once untimed first, to create the files."""
    sync = _SYNCFS
    t0 = time.perf_counter()
    for name, data in files.items():
        hashlib.sha256(data).hexdigest()
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync_each or sync is None:
                os.fsync(fd)
        finally:
            os.close(fd)
    if not fsync_each and sync is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            if sync(fd) != 0:
                raise OSError("syncfs failed")
        finally:
            os.close(fd)
    return time.perf_counter() - t0


def time_save_load(kind: str, repeats: int) -> dict[str, Any]:
    """Snapshot, write and load times of ``kind``'s checkpoint, and the floor's (see the
    module docstring): medians over ``repeats`` rounds, in seconds; ``ratio`` is the median
    of the rounds' (snapshot + write) / floor; ``floor_bytes`` and ``disk_bytes`` count the
    floor's bytes and the checkpoint directory's."""
    model, opt, info = _model_and_optimizer(kind)
    snapshot = RunSnapshot(model, opt, info, {}, {}, None, None)  # the trainer's snapshot
    state = TrainState(epochs=1, batches_per_epoch=1)
    snaps, writes, loads, floors, fsyncs, ratios = [], [], [], [], [], []
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        folder = Path(tmp) / "checkpoints"
        writer = CheckpointWriter(folder, keep=2, background=False)

        def save() -> tuple[Job, float, float]:
            state.global_step += 1
            t0 = time.perf_counter()  # what Checkpointer.save does on the training thread
            job = snapshot(state, Job(name=f"step-{state.global_step:06d}"))
            t1 = time.perf_counter()
            outcomes = writer.submit(job) + writer.wait()
            t2 = time.perf_counter()
            assert all(o.error is None for o in outcomes), outcomes
            return job, t1 - t0, t2 - t1

        for _ in range(WARMUP_SAVES):
            job, _, _ = save()
        written = folder / job.name
        files = {name: bytes(data) for name, data in job.files.items()}
        files[MANIFEST] = (written / MANIFEST).read_bytes()
        disk = {p.name: p.stat().st_size for p in written.iterdir()}
        floor_dir = Path(tmp) / "floor"
        floor_dir.mkdir()
        floor_write(files, floor_dir)  # creates the files: from now on, overwritten in place
        for i in range(repeats):
            if i % 2:
                _, snap, write = save()
                floor = floor_write(files, floor_dir)
            else:
                floor = floor_write(files, floor_dir)
                _, snap, write = save()
            t0 = time.perf_counter()
            ckpt, loaded = load_for_inference(folder / "latest")
            ckpt.optimizer_tensors()
            loads.append(time.perf_counter() - t0)
            assert torch.equal(next(iter(loaded.parameters())), next(iter(model.parameters())))
            fsyncs.append(floor_write(files, floor_dir, fsync_each=True))
            snaps.append(snap)
            writes.append(write)
            floors.append(floor)
            ratios.append((snap + write) / floor)
        writer.close()
    params = sum(p.numel() for p in model.parameters())
    return {
        "params": params,
        "snapshot": statistics.median(snaps),
        "write": statistics.median(writes),
        "load": statistics.median(loads),
        "save": statistics.median(a + b for a, b in zip(snaps, writes, strict=True)),
        "floor": statistics.median(floors),
        "fsync_each": statistics.median(fsyncs),
        "ratio": statistics.median(ratios),
        "floor_bytes": sum(len(b) for b in files.values()),
        "floor_files": len(files),
        "disk_bytes": sum(disk.values()),
        "disk_files": len(disk),
    }


class _Alternate:
    """Bench instrumentation: the run's checkpointer saves at the end of every odd epoch (not
    the last) and never after an even one — or, for a control run (``save=False``), never — so
    each epoch that follows a checkpoint, the one the background write overlaps, has two
    neighbours that follow none. It records the time ``save`` holds the training thread
    (blocking), the CPU time the writer thread spends on each checkpoint, when each write ends,
    and when the checkpointer's epoch-end hook returns (the last callback: what follows it
    until the next step ends is the next epoch's)."""

    def __init__(self, save: bool = True) -> None:
        self.save = save
        self.blocking: list[float] = []
        self.writer_cpu: list[float] = []
        self.write_ends: list[float] = []
        self.epoch_done: dict[int, float] = {}
        self._on_epoch_end = Checkpointer.on_epoch_end
        self._write = CheckpointWriter._write

    def __enter__(self) -> _Alternate:
        bench = self

        def on_epoch_end(cb: Checkpointer, state: gs.TrainState) -> None:
            cb.measured["train"] = state.global_step
            if bench.save and state.epoch % 2 == 1 and state.epoch < state.epochs:
                t0 = time.perf_counter()
                cb.save(state)
                bench.blocking.append(time.perf_counter() - t0)
            bench.epoch_done[state.epoch] = time.perf_counter()

        def write(writer: CheckpointWriter, job: Job) -> Any:
            t0 = time.thread_time()  # this thread's CPU time: user + system
            try:
                return bench._write(writer, job)
            finally:
                bench.writer_cpu.append(time.thread_time() - t0)
                bench.write_ends.append(time.perf_counter())

        Checkpointer.on_epoch_end = on_epoch_end  # type: ignore[method-assign]
        CheckpointWriter._write = write  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Checkpointer.on_epoch_end = self._on_epoch_end  # type: ignore[method-assign]
        CheckpointWriter._write = self._write  # type: ignore[method-assign]


class _StepClock(gs.Callback):
    """Bench instrumentation: when each epoch starts and when each of its first ``steps``
    optimizer steps ends."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.start: dict[int, float] = {}
        self.ends: dict[int, list[float]] = {}

    def on_epoch_start(self, state: gs.TrainState) -> None:
        self.ends[state.epoch] = []
        self.start[state.epoch] = time.perf_counter()

    def on_step_end(self, state: gs.TrainState) -> None:
        ends = self.ends[state.epoch]
        if len(ends) < self.steps:
            ends.append(time.perf_counter())


def _se_of_median(values: list[float]) -> float:
    """Standard error of a median, from the spread (IQR / 1.35 estimates sigma)."""
    q = statistics.quantiles(values, n=4)
    return 1.2533 * (q[2] - q[0]) / 1.35 / len(values) ** 0.5


class _Sample:
    """Per run kind (saving, control): how much longer an even epoch's first steps and whole
    epoch take than the mean of its two odd neighbours, one value per even epoch, by run."""

    def __init__(self) -> None:
        self.runs: dict[str, list[list[float]]] = {"window": [], "epoch": []}

    def add(self, name: str, values: list[float]) -> None:
        self.runs[name].append(values)

    def values(self, name: str) -> list[float]:
        return [v for run in self.runs[name] for v in run]

    def median_diff(self, other: _Sample, name: str) -> tuple[float, float]:
        """Median of ours minus median of ``other``'s, and its standard error."""
        mine, theirs = self.values(name), other.values(name)
        se = (_se_of_median(mine) ** 2 + _se_of_median(theirs) ** 2) ** 0.5
        return statistics.median(mine) - statistics.median(theirs), se

    def mean_diff(self, other: _Sample, name: str) -> tuple[float, float]:
        """Mean of ours minus mean of ``other``'s, and its standard error from the spread of
        the runs' means (a run's values share neighbours, so they are not independent)."""
        out, var = 0.0, 0.0
        for sample, sign in ((self, 1), (other, -1)):
            means = [statistics.fmean(run) for run in sample.runs[name]]
            out += sign * statistics.fmean(means)
            var += statistics.variance(means) / len(means) if len(means) > 1 else 0.0
        return out, var**0.5


def mnist_share(rounds: int, epochs: int, window: int) -> dict[str, Any]:
    """The cost of a checkpoint every epoch, as a share of an epoch's training time (see the
    module docstring): each round trains once saving after every odd epoch and once saving
    never (the control, in alternating order)."""
    overrides = [
        f"train.epochs={epochs}",
        "train.progress=false",
        "checkpoint.every=epoch",
        "log.plots=false",
    ]
    saving, control = _Sample(), _Sample()
    blocking: list[float] = []
    writer_cpu: list[float] = []
    epoch_times: list[float] = []
    late = 0
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        for r in range(rounds + 1):  # round 0 warms up
            for save in (True, False) if r % 2 else (False, True):
                cfg = [*overrides, f"run.dir={tmp}", f"run.name=r{r}-{save}"]
                trainer = gs.Trainer.from_config(ROOT / "examples" / "mnist_simplenet.toml", cfg)
                trainer.config.data.path = str(MNIST)
                clock = _StepClock(window)
                trainer.callbacks.append(clock)
                with _Alternate(save) as bench, contextlib.redirect_stdout(io.StringIO()):
                    result = trainer.fit()
                if not r:
                    continue
                t = [h["time_s"] for h in result.history]  # t[i] is epoch i + 1
                # from the end of the previous epoch's hooks (the save included in blocking)
                # to the end of the window-th step; epoch 1 from its start
                begun = {1: clock.start[1], **{e + 1: v for e, v in bench.epoch_done.items()}}
                span = {e: clock.ends[e][-1] - begun[e] for e in clock.ends}

                # epoch e (even) follows a checkpoint; epochs e - 1 and e + 1 follow none:
                # their mean cancels a steady drift
                after = range(2, len(t), 2)
                sample = saving if save else control
                sample.add("window", [span[e] - (span[e - 1] + span[e + 1]) / 2 for e in after])
                sample.add("epoch", [t[e - 1] - (t[e - 2] + t[e]) / 2 for e in after])
                epoch_times += t
                if save:
                    late += sum(bench.write_ends[e // 2 - 1] > clock.ends[e][-1] for e in after)
                    blocking += bench.blocking
                    writer_cpu += bench.writer_cpu
                    print(
                        f"  round {r}: saving blocks training "
                        f"{statistics.fmean(bench.blocking) * 1e3:.2f} ms on average, the "
                        f"writer thread uses {statistics.fmean(bench.writer_cpu) * 1e3:.2f} ms "
                        "of CPU"
                    )
    epoch = statistics.median(epoch_times)
    block = statistics.fmean(blocking)
    background, background_se = saving.mean_diff(control, "window")
    typical, typical_se = saving.median_diff(control, "window")
    whole, whole_se = saving.mean_diff(control, "epoch")
    return {
        "epoch_ms": epoch * 1e3,
        "blocking": block / epoch,
        "blocking_median": statistics.median(blocking) / epoch,
        "background": background / epoch,
        "background_se": background_se / epoch,
        "typical": typical / epoch,
        "typical_se": typical_se / epoch,
        "control_window_ms": statistics.fmean(control.values("window")) * 1e3,
        "writes": len(saving.values("window")),
        "late": late,
        "whole_epoch": whole / epoch,
        "whole_epoch_se": whole_se / epoch,
        "writer_cpu": statistics.fmean(writer_cpu) / epoch,
        "cost_ms": (block + background) * 1e3,
        "share": (block + background) / epoch,
        "share_se": background_se / epoch,
        "typical_share": (statistics.median(blocking) + typical) / epoch,
        "cpu_share": (block + statistics.fmean(writer_cpu)) / epoch,
    }


def _write_idx(path: Path, array: np.ndarray) -> None:
    """A plain (not gzip'd) IDX file of unsigned bytes: what the MNIST source reads."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def full_size_epoch(epochs: int = 3) -> float:
    """Seconds per epoch of the MNIST example at the size of MNIST's real training split, which
    is not available offline: the 10,000 shared images repeated to 60,000 and written as a
    ``train`` split (so ``val_split = 0.2`` keeps 48,000 to train and 12,000 to validate, as it
    would with the real files). Same model, recipe and batch size; no checkpoints; the median
    of the epochs after the first."""
    images = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        folder = Path(tmp) / "mnist60k"
        folder.mkdir()
        _write_idx(folder / "train-images-idx3-ubyte", np.tile(images, (6, 1, 1)))
        _write_idx(folder / "train-labels-idx1-ubyte", np.tile(labels, 6))
        cfg = [
            f"train.epochs={epochs}",
            "train.progress=false",
            "checkpoint.every=never",
            "log.plots=false",
            f"run.dir={tmp}",
            "run.name=full",
        ]
        trainer = gs.Trainer.from_config(ROOT / "examples" / "mnist_simplenet.toml", cfg)
        trainer.config.data.path = str(folder)
        with contextlib.redirect_stdout(io.StringIO()):
            result = trainer.fit()
    times = [h["time_s"] for h in result.history]
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=36)
    parser.add_argument(
        "--repeats", type=int, default=9, help="rounds of save, floor and load per model"
    )
    parser.add_argument("--window", type=int, default=10, help="steps compared after a write")
    parser.add_argument(
        "--full-epochs", type=int, default=3, help="epochs timed at the full split's size"
    )
    args = parser.parse_args()
    if args.epochs < 6:
        parser.error("--epochs must be at least 6 (epochs after a checkpoint are compared)")
    if args.rounds < 1 or args.window < 1 or args.repeats < 1:
        parser.error("--rounds, --window and --repeats must be at least 1")
    if args.full_epochs < 2:
        parser.error("--full-epochs must be at least 2 (the first epoch warms up)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    sync = "fsync of each file" if _SYNCFS is None else "one syncfs"
    ratios = {}
    for kind in ("simplenet", "mlp10m"):
        t = time_save_load(kind, args.repeats)
        ratios[kind] = t["ratio"]
        print(
            f"{kind:>10}: {t['params']:>10,} parameters: snapshot {t['snapshot'] * 1e3:7.1f} ms "
            f"(training thread), write {t['write'] * 1e3:7.1f} ms (background), "
            f"load {t['load'] * 1e3:7.1f} ms"
        )
        verdict = "OK" if t["ratio"] <= FLOOR_TARGET else "over target"
        same = "the same" if t["disk_bytes"] == t["floor_bytes"] else "NOT the same"
        print(
            f"checkpoint {kind}: {t['save'] * 1e3:.1f} ms (snapshot + write, synchronous) vs "
            f"floor (sha256 + write + {sync} of the same {t['floor_bytes']:,} bytes in "
            f"{t['floor_files']} files) {t['floor'] * 1e3:.1f} ms: ratio {t['ratio']:.2f}x "
            f"(target <= {FLOOR_TARGET}) {verdict}; the checkpoint directory's "
            f"{t['disk_files']} files hold {t['disk_bytes']:,} bytes ({same}); an fsync of "
            f"each file instead: {t['fsync_each'] * 1e3:.1f} ms"
        )
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        print(f"MNIST not found at {MNIST}: share of training time not measured")
        return
    print(f"MNIST simplenet example, {args.epochs} epochs, {args.rounds} rounds:")
    s = mnist_share(args.rounds, args.epochs, args.window)
    print(
        f"  epoch {s['epoch_ms']:.0f} ms. Per checkpoint, as a share of an epoch, on average: "
        f"blocking {s['blocking']:.2%}; background {s['background']:+.2%} +- "
        f"{s['background_se']:.2%} (the first {args.window} steps after each of {s['writes']} "
        f"writes, less the control's {s['control_window_ms']:+.2f} ms; "
        f"{s['writes'] - s['late']} writes had finished by then); writer CPU time "
        f"{s['writer_cpu']:.2%}"
    )
    print(
        f"  typical (medians): blocking {s['blocking_median']:.2%}, background "
        f"{s['typical']:+.2%} +- {s['typical_se']:.2%}, together {s['typical_share']:+.2%}"
    )
    print(
        f"  cross-check, whole epochs: an epoch after a write takes {s['whole_epoch']:+.2%} "
        f"+- {s['whole_epoch_se']:.2%} longer than its neighbours, less the control's (150 "
        "steps of this machine's noise)"
    )
    if s["late"]:
        print(f"  {s['late']} writes outlasted the window: run again with a larger --window")
    full = full_size_epoch(args.full_epochs)
    print(
        f"  at the size of MNIST's real training split (not available offline: the 10,000 "
        f"images repeated to 60,000, so 48,000 train and 12,000 validate) an epoch takes "
        f"{full * 1e3:.0f} ms, and the same {s['cost_ms']:.1f} ms per checkpoint is "
        f"{s['cost_ms'] / 1e3 / full:.2%} of it"
    )
    verdict = "OK" if s["share"] <= 0.02 else "over target"
    print(
        f"per-epoch checkpointing of the MNIST example (the offline 8,000-image split) costs "
        f"{s['share']:+.2%} +- {s['share_se']:.2%} of training time measured (blocking + "
        f"background, means), {s['cpu_share']:.2%} counted (blocking + writer CPU); target "
        f"<= 2%: {verdict}"
    )
    verdict = "OK" if max(ratios.values()) <= FLOOR_TARGET else "over target"
    print(
        "beside it, a checkpoint's whole cost against its floor (sha256 + write + sync of the "
        f"same bytes): {', '.join(f'{k} {r:.2f}x' for k, r in ratios.items())}; target <= "
        f"{FLOOR_TARGET}x: {verdict}"
    )


if __name__ == "__main__":
    main()
