"""What checkpoints cost: save and load times, and the share of training time they take.

1. Save and load, for the MNIST simplenet (784-128-10, SGD with momentum) and a 10M-parameter
   MLP (1024-3000-2300-10, Adam: weights + two moments = 3 × 40 MB). *Snapshot* is what the
   training thread pays (safetensors bytes of weights and optimizer, JSON of the rest); *write* is
   the background thread's part (hash, write and fsync each file, manifest, rename, fsync the
   folder, links, pruning); *load* is verify (SHA-256 of every file) + rebuild the model + read
   the weights and optimizer state.
2. The MNIST example (``examples/mnist_simplenet.toml``, on ``../shared/data/mnist``): the share
   of training time per-epoch checkpointing costs. Two parts: the time saving *blocks* the
   training thread (the snapshot), and how much longer epochs take while the background writer
   works. For the second, each run alternates blocks of 6 epochs that checkpoint every epoch
   with blocks that do not, and adjacent blocks are compared (within one run, so the shared
   machine's slow drifts cancel; whole runs compared seconds apart vary by +-20 % here).
   Target: <= 2 %.

    python bench/checkpoint.py [--rounds 5] [--epochs 36]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch

import gradstep as gs
from gradstep.callbacks.checkpoint import Checkpointer
from gradstep.checkpoint.content import optimizer_state
from gradstep.checkpoint.files import json_bytes, tensors_to_bytes
from gradstep.checkpoint.load import load_for_inference
from gradstep.checkpoint.writer import CheckpointWriter, Job
from gradstep.models import MLP, SimpleNet

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"


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


def time_save_load(kind: str, repeats: int) -> dict[str, float]:
    model, opt, info = _model_and_optimizer(kind)
    snaps, writes, loads = [], [], []
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        folder = Path(tmp) / "checkpoints"
        writer = CheckpointWriter(folder, keep=2, background=False)
        for i in range(repeats):
            t0 = time.perf_counter()  # what RunSnapshot does on the training thread
            tensors, meta = optimizer_state(opt)
            files = {
                "model.safetensors": tensors_to_bytes(model.state_dict()),
                "optimizer.safetensors": tensors_to_bytes(tensors),
                "model.json": json_bytes(info),
                "state.json": json_bytes({"optimizer": meta}),
            }
            job = Job(name=f"step-{i + 1:06d}", files=files)
            t1 = time.perf_counter()
            outcomes = writer.submit(job) + writer.wait()
            t2 = time.perf_counter()
            assert all(o.error is None for o in outcomes)
            ckpt, loaded = load_for_inference(folder / "latest")
            ckpt.optimizer_tensors()
            t3 = time.perf_counter()
            snaps.append(t1 - t0)
            writes.append(t2 - t1)
            loads.append(t3 - t2)
            assert torch.equal(next(iter(loaded.parameters())), next(iter(model.parameters())))
    params = sum(p.numel() for p in model.parameters())
    return {
        "params": params,
        "snapshot": statistics.median(snaps),
        "write": statistics.median(writes),
        "load": statistics.median(loads),
    }


BLOCK = 6  # epochs in a block: blocks alternate between checkpointing every epoch and none


class _Blocks:
    """Bench instrumentation: the run's checkpointer saves after every epoch of the "on" blocks
    (odd blocks of ``BLOCK`` epochs) and never in the "off" ones, and the time the training
    thread spends saving is added up. The background writer runs at low priority and may spill
    a checkpoint's work into the following epochs, so whole blocks are compared, each without
    its first epochs (the writer settling in, or catching up)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.saves = 0
        self._on_epoch_end = Checkpointer.on_epoch_end

    def __enter__(self) -> _Blocks:
        timed = self

        def on_epoch_end(cb: Checkpointer, state: gs.TrainState) -> None:
            cb.measured["train"] = state.global_step
            if ((state.epoch - 1) // BLOCK) % 2 == 1 and state.epoch < state.epochs:
                t0 = time.perf_counter()
                cb.save(state)
                timed.seconds += time.perf_counter() - t0
                timed.saves += 1

        Checkpointer.on_epoch_end = on_epoch_end  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        Checkpointer.on_epoch_end = self._on_epoch_end  # type: ignore[method-assign]


def mnist_share(rounds: int, epochs: int) -> dict[str, float]:
    """The cost of a checkpoint every epoch, as a share of an epoch's training time."""
    overrides = [
        f"train.epochs={epochs}",
        "train.progress=false",
        "checkpoint.every=epoch",
        "log.plots=false",
    ]
    ratios, sync, epoch_times = [], [], []
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        for r in range(rounds + 1):  # round 0 warms up
            cfg = [*overrides, f"run.dir={tmp}"]
            trainer = gs.Trainer.from_config(ROOT / "examples" / "mnist_simplenet.toml", cfg)
            trainer.config.data.path = str(MNIST)
            with _Blocks() as timed, contextlib.redirect_stdout(io.StringIO()):
                result = trainer.fit()
            if not r:
                continue
            t = [h["time_s"] for h in result.history]  # t[i] is epoch i + 1
            blocks = [t[i : i + BLOCK] for i in range(0, len(t) - BLOCK + 1, BLOCK)]
            pairs = []
            for off, on in zip(blocks[::2], blocks[1::2], strict=False):
                # "on" epochs after the first (each follows a checkpoint); "off" epochs after
                # the first two (the last "on" checkpoint's write may spill into them)
                pairs.append(statistics.median(on[1:]) / statistics.median(off[2:]) - 1)
            ratios += pairs
            epoch_times += t[1:]
            sync.append(timed.seconds / max(timed.saves, 1))
            print(
                f"  round {r}: epochs while checkpointing every epoch take "
                f"{statistics.median(pairs):+.2%} longer (median of {len(pairs)} block pairs); "
                f"saving blocks training {sync[-1] * 1e3:.2f} ms"
            )
    epoch = statistics.median(epoch_times)
    background = statistics.median(ratios)
    blocking = statistics.median(sync) / epoch
    return {"share": background + blocking, "background": background, "blocking": blocking}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=36)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.epochs < 2 * BLOCK:
        parser.error(f"--epochs must be at least {2 * BLOCK} (blocks of {BLOCK} are compared)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for kind in ("simplenet", "mlp10m"):
        t = time_save_load(kind, args.repeats)
        print(
            f"{kind:>10}: {t['params']:>10,} parameters: snapshot {t['snapshot'] * 1e3:7.1f} ms "
            f"(training thread), write {t['write'] * 1e3:7.1f} ms (background), "
            f"load {t['load'] * 1e3:7.1f} ms"
        )
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        print(f"MNIST not found at {MNIST}: share of training time not measured")
        return
    print(f"MNIST simplenet example, {args.epochs} epochs, {args.rounds} runs:")
    share = mnist_share(args.rounds, args.epochs)
    verdict = "OK" if share["share"] <= 0.02 else "over target"
    print(
        f"per-epoch checkpointing costs {share['share']:+.2%} of training time "
        f"(blocking {share['blocking']:.2%} + background write {share['background']:+.2%}; "
        f"target <= 2%) {verdict}"
    )


if __name__ == "__main__":
    main()
