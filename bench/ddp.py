"""Data-parallel training on the CPU: gradstep under torchrun against a hand-written DDP loop.

The workloads: the MNIST example's data (the shared 10,000-image split, 20 % held out by
gradstep's seeded split, normalised with the training part's mean and std: the 8,000 images
``gradstep fit examples/mnist_simplenet.toml`` trains on) and model — the zoo's ``simplenet``
(784-128-10) — and the zoo's ``cnn`` (two 3x3 conv + BatchNorm + pool blocks) on the same
images; SGD lr 0.01 momentum 0.9; 1 process x batch 64 against 2 processes x batch 32 (the same
effective batch), gloo, 1 thread per process (``OMP_NUM_THREADS=1``). Each run is its own
process tree, so the systems cannot share a warm cache:

* ``hand``: the hand-written loop — rank ``r`` takes its ``tensor_split`` share of each global
  micro-batch (the contiguous block of ``batch x world`` samples of the epoch's one
  permutation, as :mod:`gradstep.data.sampler` deals them), gathers its share of the whole
  epoch with one ``index_select`` and splits it into views (what gradstep's ``TensorBatches``
  does: the hand-written "slice pre-shuffled tensors" loop), ``DistributedDataParallel`` with
  its defaults, then zero_grad, forward, loss, backward, step; nothing else. One process runs
  the plain model (no DDP);
* ``gradstep``: ``gs.Trainer(...).fit`` on the same tensors, under
  ``python -m torch.distributed.run --standalone --nproc-per-node 2`` (one process: plain
  ``python``), with no checkpoints, no TensorBoard, no plots, no progress bar and no gradient-norm
  monitoring (the hand loop saves nothing and measures no gradient), but its default progress
  lines (every 50 steps) and train loss/accuracy;
* ``lightning`` (``strategy="ddp"``) and ``accelerate`` (``Accelerator(cpu=True)``, model
  and optimizer prepared), 2 x 32 under the same torchrun, where they are installed (an
  optional extra used only by bench/: ``pip install -e '.[peers]'``). They are fed the same
  per-rank micro-batches, gathered the same way (Lightning: a ``DataLoader(batch_size=None)``
  whose sampler gathers the epoch and yields the micro-batches' numbers: no per-sample
  collation), so the figures compare the training loops, not the data loaders; Lightning with
  no logger, progress bar, model summary or checkpoints.

What is timed: each epoch on rank 0, from its start (the epoch's gather included) to its last
step, and the figures are the steady state — epochs 2 to ``--epochs`` (so ``--epochs`` >= 2;
the default 3 times epochs 2-3) — for every system alike: ``hand`` and ``accelerate`` time their
own epochs; gradstep's are the ``time_s`` of its epoch records in ``metrics.jsonl`` (from the
epoch's start, its gather included, to its train metrics: the on-epoch-end callbacks, here
the record's own writing, are outside); Lightning's, a callback's ``on_train_epoch_start`` to
``on_train_epoch_end``. Start-up, process groups, the model's wrapping and gradstep's pre-flight
probe are outside every figure. The first epoch is shown apart (its median seconds, and
gradstep's ratio to the hand loop for it alone), not counted: it pays one-off costs that differ
between systems for reasons that are not the loop's.

Why (measured on the 2-core machine, the CNN at 1 x 64): an earlier version gathered each
micro-batch with its own ``index_select`` in the hand loop and timed all epochs, and gradstep
came out at 0.65-0.84x the hand loop's time. The cause was glibc's malloc, not the loops: it
raises its mmap and trim thresholds to the size of the largest mmapped block freed so far.
Gradstep's one 25 MB gather per epoch lifted them above the CNN's activations, while the hand
loop's blocks stayed under them, so glibc kept handing the activations' memory back to the
kernel and faulting it in again every step: 100-540 k minor page faults and 0.2-1.4 s of system
time per epoch, in every epoch, and epochs of 1.6-3.5 s. The same loop with one 25 MB tensor
allocated and freed before it (or with ``MALLOC_MMAP_THRESHOLD_`` fixed) has ~0 faults and
1.34-1.49 s epochs, as gradstep's 1.4 s. Gradstep's pre-flight probe (two samples, no gradient)
made no measurable difference; the first step's own warm-up is ~15-20 ms. With the same gather
for every system, epochs 2 on are free of the effect for all of them. Epoch 1 is not: the hand
loop's first gather is only freed at its end (epoch 1 of 2.0-2.3 s, then 1.3-1.4 s), while
something in gradstep's set-up has lifted the thresholds already (~40 k faults in its epoch 1
against ~200 k), hence gradstep's ~0.7x for the CNN's first epoch alone.

No system validates (the training split only, for all alike). ``loss after`` is the training
loss of rank 0's final weights (outside the timing): the hand loop and gradstep with the same
world train the same samples in the same order from the same initial weights, so theirs
agree; 1 x 64 and 2 x 32 differ only by summation order and (the CNN) each rank's BatchNorm
statistics.

Rounds alternate the order of the systems (reversed every other round); printed per workload,
system and world: steady-state samples/s (median over rounds, min-max), the loss after, the
first epoch's seconds (median), and the step time over the hand-written loop's with the same
world (steady state: median over rounds of the paired ratio).
Target: <= 1.05. On a 2-core machine the 2 ranks share its cores with each other (and with
gloo's threads), so 2 x 32 is no faster than 1 x 64 there: the figure that matters is the ratio.

    python bench/ddp.py [--rounds 3] [--epochs 3] [--models simplenet,cnn] [--limit N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
SEED, LR, MOMENTUM = 0, 0.01, 0.9
WORKLOADS = [(1, 64), (2, 32)]  # (processes, batch per process): the same effective batch
SYSTEMS = ("hand", "gradstep", "lightning", "accelerate")
PEERS = {"lightning": "lightning", "accelerate": "accelerate"}  # system -> module to import
PEER_WORLD = 2  # the peers run the data-parallel workload only
TARGET = 1.05
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK")
DIST_ENV += ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def make_model(name: str) -> nn.Module:
    """The zoo model ``name``, with the same initial weights in every system."""
    from gradstep.models import CNN, SimpleNet

    torch.manual_seed(SEED)
    if name == "cnn":
        return CNN(in_channels=1, num_classes=10, image_size=28)
    return SimpleNet(input_size=784, hidden_size=128, num_classes=10)


def prepare_data(limit: int | None, dest: Path) -> int:
    """The MNIST example's training tensors (its split and normalisation), the first ``limit``
    of them, saved to ``dest`` for the children; returns their number."""
    from gradstep.data.mnist import load_mnist
    from gradstep.data.prep import Normalizer, split

    x, y, _ = load_mnist(MNIST, download_missing=False)
    (x, y), _ = split((x, y), 0.2, SEED)  # examples/mnist_simplenet.toml: val_split = 0.2
    x = Normalizer.fit(x)(x)  # normalize = true: the training part's mean and std
    if limit is not None:
        x, y = x[:limit], y[:limit]
    save_file({"x": x.contiguous(), "y": y.contiguous()}, str(dest))
    return len(y)


# ---------------------------------------------------------------------------------------------
# children: one run of one system (rank 0 writes its result to --out)


def rank_batches(n: int, epoch: int, batch: int, rank: int, world: int) -> list[torch.Tensor]:
    """This rank's micro-batches (index tensors) of epoch ``epoch``: global micro-batch ``k`` is
    the block ``k*batch*world ...`` of the epoch's permutation, and rank ``r`` takes its
    ``tensor_split`` share of it (the hand-written form of gradstep's sharding rule)."""
    from gradstep.data.sampler import epoch_order  # the permutation itself: the same samples

    order = epoch_order(n, epoch, SEED)
    block = batch * world
    return [order[i : i + block].tensor_split(world)[rank] for i in range(0, n, block)]


Batches = list[tuple[torch.Tensor, torch.Tensor]]


def rank_epoch(
    x: torch.Tensor, y: torch.Tensor, epoch: int, batch: int, rank: int, world: int
) -> Batches:
    """This rank's micro-batches of epoch ``epoch`` (``rank_batches``), gathered at once: one
    ``index_select`` of its share of the whole epoch, split into views (as gradstep's
    ``TensorBatches``; a gather per micro-batch page-faults, see the module's docstring)."""
    idx = rank_batches(len(y), epoch, batch, rank, world)
    order, sizes = torch.cat(idx), [len(i) for i in idx]
    xs, ys = x.index_select(0, order).split(sizes), y.index_select(0, order).split(sizes)
    return list(zip(xs, ys, strict=True))


class EpochBatches(torch.utils.data.Dataset):
    """``rank_epoch`` for a DataLoader (``batch_size=None``): ``dataset[k]`` is micro-batch ``k``
    of the epoch its :meth:`sampler` is iterating."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, rank: int, world: int):
        self.x, self.y, self.batch, self.rank, self.world = x, y, batch, rank, world
        self.batches: Batches = []

    def __len__(self) -> int:
        return -(-len(self.y) // (self.batch * self.world))

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches[k]

    def sampler(self) -> torch.utils.data.Sampler[int]:
        return EpochSampler(self)


class EpochSampler(torch.utils.data.Sampler[int]):
    """The micro-batch numbers of an epoch; iterating gathers the epoch (at the first batch,
    inside the epoch). Epochs count from 1, as gradstep's; ``set_epoch`` is what Lightning
    calls with its 0-based epoch."""

    def __init__(self, data: EpochBatches) -> None:
        self.data, self.epoch = data, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch + 1

    def __iter__(self) -> Iterator[int]:
        d = self.data
        d.batches = []  # the last epoch's gather is freed before the next one is made
        d.batches = rank_epoch(d.x, d.y, self.epoch, d.batch, d.rank, d.world)
        yield from range(len(d.batches))

    def __len__(self) -> int:
        return len(self.data)


def timed(epoch_s: list[float], n: int) -> dict:
    """A child's result from its epochs' seconds: the steady state (epochs 2 on) and the first."""
    steady = sum(epoch_s[1:])
    return {
        "epoch_s": epoch_s,
        "first_s": epoch_s[0],
        "time_s": steady,
        "samples_per_s": n * (len(epoch_s) - 1) / steady,
    }


def final_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The training loss of ``model``'s weights (eval mode, no grad): same work, same result."""
    model.eval()
    with torch.no_grad():
        return sum(
            nn.functional.cross_entropy(model(xb), yb, reduction="sum").item()
            for xb, yb in zip(x.split(1024), y.split(1024), strict=True)
        ) / len(y)


def child_hand(model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace) -> dict:
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    net = model
    if world > 1:
        torch.distributed.init_process_group("gloo")
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    criterion = nn.CrossEntropyLoss()
    epoch_s = []
    if world > 1:
        torch.distributed.barrier()
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        for xb, yb in rank_epoch(x, y, epoch, a.batch, rank, world):
            optimizer.zero_grad()
            loss = criterion(net(xb), yb)
            loss.backward()
            optimizer.step()
        epoch_s.append(time.perf_counter() - t0)
    if world > 1:
        torch.distributed.destroy_process_group()
    return {**timed(epoch_s, len(y)), "model": model}


def child_gradstep(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace
) -> dict:
    import gradstep as gs

    trainer = gs.Trainer(
        name="bench",
        run_dir=a.run_dir,
        seed=SEED,
        epochs=a.epochs,
        batch_size=a.batch,
        optimizer="sgd",
        lr=LR,
        momentum=MOMENTUM,
        val_split=0.0,  # the tensors are the example's training split already
        normalize=False,  # and normalised already
        device="cpu",
        backend="gloo",
        checkpoint_every="never",
        grad_norm=False,
        progress=False,
        plots=False,
        tensorboard=False,
        print_diagnosis=False,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # progress lines written, not shown
        trainer.fit(model, train=(x, y))
    result: dict = {"model": model}
    if int(os.environ.get("RANK", "0")) == 0:  # rank 0 writes the run's records
        (metrics,) = Path(a.run_dir).glob("*/metrics.jsonl")
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line]
        epoch_s = [r["time_s"] for r in records if r.get("kind") == "epoch"]
        if len(epoch_s) != a.epochs:
            raise RuntimeError(f"gradstep: {len(epoch_s)} epoch records, not {a.epochs}")
        result.update(timed(epoch_s, len(y)))
    return result


def child_lightning(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace
) -> dict:
    import lightning as L

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))

    class Module(L.LightningModule):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net
            self.criterion = nn.CrossEntropyLoss()

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
            xb, yb = batch
            return self.criterion(self.net(xb), yb)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=LR, momentum=MOMENTUM)

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.epoch_s: list[float] = []

        def on_train_start(self, trainer: L.Trainer, _: L.LightningModule) -> None:
            trainer.strategy.barrier()

        def on_train_epoch_start(self, trainer: L.Trainer, _: L.LightningModule) -> None:
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer: L.Trainer, _: L.LightningModule) -> None:
            self.epoch_s.append(time.perf_counter() - self.t0)

    data = EpochBatches(x, y, a.batch, rank, world)
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=data.sampler())
    clock = Clock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=world,
        strategy="ddp" if world > 1 else "auto",
        max_epochs=a.epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,  # the loader deals this rank's share already
        callbacks=[clock],
    )
    trainer.fit(Module(model), train_dataloaders=loader)
    return {**timed(clock.epoch_s, len(y)), "model": model}


def child_accelerate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace
) -> dict:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    net, optimizer = accelerator.prepare(model, optimizer)  # DDP when several processes
    criterion = nn.CrossEntropyLoss()
    epoch_s = []
    accelerator.wait_for_everyone()
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        for xb, yb in rank_epoch(x, y, epoch, a.batch, rank, world):
            optimizer.zero_grad()
            loss = criterion(net(xb), yb)
            accelerator.backward(loss)
            optimizer.step()
        epoch_s.append(time.perf_counter() - t0)
    accelerator.end_training()
    return {**timed(epoch_s, len(y)), "model": model}


def child(a: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # the peers' advice (num_workers, ...) is not a result
    data = load_file(a.data)
    x, y = data["x"], data["y"]
    run = {
        "hand": child_hand,
        "gradstep": child_gradstep,
        "lightning": child_lightning,
        "accelerate": child_accelerate,
    }[a.child]
    result = run(make_model(a.model), x, y, a)
    if int(os.environ.get("RANK", "0")) == 0:
        result["loss"] = final_loss(result.pop("model"), x, y)
        Path(a.out).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# parent: rounds of every system, then the table


def child_env() -> dict[str, str]:
    """The parent's environment without a torchrun job's variables, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def launch(system: str, model: str, world: int, batch: int, a: argparse.Namespace, tmp: Path):
    """Run one system once; its result (``epoch_s``, ``first_s``, the steady state's ``time_s``
    and ``samples_per_s``, ``loss``)."""
    out = tmp / f"{system}-{model}-{world}.json"
    out.unlink(missing_ok=True)
    run_dir = Path(tempfile.mkdtemp(dir=tmp, prefix="run-"))
    args = [
        str(Path(__file__).resolve()),
        "--child",
        system,
        "--model",
        model,
        "--batch",
        str(batch),
        "--epochs",
        str(a.epochs),
        "--data",
        str(tmp / "data.safetensors"),
        "--out",
        str(out),
        "--run-dir",
        str(run_dir),
    ]
    if world > 1:
        torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"]
        cmd = [sys.executable, *torchrun, *args]
    else:
        cmd = [sys.executable, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, env=child_env(), capture_output=True, text=True, timeout=a.timeout, cwd=tmp
    )
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr.strip() or proc.stdout.strip() or "(no output)").splitlines()[-12:]
        raise RuntimeError(f"{system} {model} {world}x{batch} failed:\n" + "\n".join(tail))
    result = json.loads(out.read_text())
    epochs = " ".join(f"{t:.2f}" for t in result["epoch_s"])
    print(
        f"  {model} {system} {world}x{batch}: {result['samples_per_s']:,.0f} samples/s "
        f"(epochs {epochs} s; {time.perf_counter() - t0:.1f} s with start-up)",
        file=sys.stderr,
        flush=True,
    )
    return result


def installed(module: str) -> bool:
    try:
        __import__(module)
    except Exception:  # an import that fails in any way is not usable here
        return False
    return True


def fmt_row(cells: list[str]) -> str:
    widths = [10, 11, 7, 28, 11, 10, 0]
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median over them)")
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs per run (>= 2: the first is not timed)"
    )
    parser.add_argument("--models", default="simplenet,cnn", help="comma-separated: simplenet,cnn")
    parser.add_argument("--limit", type=int, default=None, help="use the first N train samples")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated systems")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    # a child run (started by the parent)
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        child(a)
        return

    models = [m for m in a.models.split(",") if m]
    unknown = [m for m in models if m not in ("simplenet", "cnn")]
    if unknown or a.rounds < 1 or a.epochs < 2:
        parser.error(
            f"--models takes simplenet,cnn (got {a.models}); --rounds >= 1; --epochs >= 2 "
            "(the steady state is epochs 2 on)"
        )
    systems = [s for s in a.systems.split(",") if s]
    if any(s not in SYSTEMS for s in systems) or not {"hand", "gradstep"} <= set(systems):
        parser.error(f"--systems: hand and gradstep, and any of {', '.join(SYSTEMS[2:])}")
    skipped = []
    for peer in [s for s in systems if s in PEERS]:
        if not installed(PEERS[peer]):
            systems.remove(peer)
            skipped.append(f"{peer}: not installed (pip install -e '.[peers]')")
    runs = [(s, w, b) for w, b in WORKLOADS for s in ("hand", "gradstep") if s in systems]
    runs += [(s, w, b) for w, b in WORKLOADS if w == PEER_WORLD for s in systems if s in PEERS]

    results: dict[tuple[str, str, int], list[dict]] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="gradstep-bench-ddp-") as name:
        tmp = Path(name)
        n = prepare_data(a.limit, tmp / "data.safetensors")
        for r in range(a.rounds):
            order = runs if r % 2 == 0 else runs[::-1]  # alternate the order of the systems
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr, flush=True)
            for model in models:
                for system, world, batch in order:
                    if system in failed:
                        continue
                    try:
                        res = launch(system, model, world, batch, a, tmp)
                    except (RuntimeError, subprocess.TimeoutExpired) as err:
                        if system not in PEERS:
                            raise
                        failed[system] = str(err).splitlines()[-1]  # a peer's failure: noted
                        continue
                    results.setdefault((model, system, world), []).append(res)

    import gradstep

    steady = "epoch 2" if a.epochs == 2 else f"epochs 2-{a.epochs}"
    print(
        f"workload: MNIST example's training split, {n:,} samples, {a.epochs} epochs per run, "
        f"SGD lr {LR} momentum {MOMENTUM}, no validation; CPU, gloo, 1 thread per process; "
        f"{os.cpu_count()} cores; median of {a.rounds} rounds"
    )
    print(f"timed: {steady} (steady state) on rank 0, every system alike; epoch 1 shown apart")
    print(f"torch {torch.__version__}, gradstep {getattr(gradstep, '__version__', '?')}", end="")
    for peer, module in PEERS.items():
        if peer in systems and peer not in failed:
            print(f", {peer} {getattr(sys.modules.get(module), '__version__', '?')}", end="")
    print()
    for line in skipped:
        print(line)
    for peer, why in failed.items():
        print(f"{peer}: failed ({why})")
    print()
    header = ["workload", "system", "procs", "samples/s median (min-max)", "loss after"]
    print(fmt_row([*header, "epoch 1", "step time vs hand"]))
    verdicts = []
    for model in models:
        for world, batch in WORKLOADS:
            hand = results.get((model, "hand", world), [])
            for system in systems:
                runs_ = results.get((model, system, world))
                if not runs_:
                    continue
                sps = [x["samples_per_s"] for x in runs_]
                ratio = ""
                if system != "hand" and len(hand) == len(runs_):  # paired by round
                    pairs = [s["time_s"] / h["time_s"] for s, h in zip(runs_, hand, strict=True)]
                    paired = statistics.median(pairs)
                    ratio = f"{paired:.3f}x"
                    if system == "gradstep":
                        verdict = "OK" if paired <= TARGET else "ABOVE TARGET"
                        ratio += f" {verdict}"
                        first = statistics.median(
                            s["first_s"] / h["first_s"] for s, h in zip(runs_, hand, strict=True)
                        )
                        verdicts.append((model, world, batch, paired, pairs, verdict, first))
                spread = f"{statistics.median(sps):,.0f} ({min(sps):,.0f}-{max(sps):,.0f})"
                loss = f"{statistics.median(x['loss'] for x in runs_):.4f}"
                first_s = f"{statistics.median(x['first_s'] for x in runs_):.2f} s"
                cells = [model, system, f"{world}x{batch}", spread, loss, first_s, ratio]
                print(fmt_row(cells))
    print()
    for model, world, batch, paired, pairs, verdict, first in verdicts:
        print(
            f"gradstep / hand-written DDP loop, {model} {world}x{batch}: {paired:.3f}x step time, "
            f"{steady} (rounds {min(pairs):.3f}-{max(pairs):.3f}; target <= {TARGET}) {verdict}; "
            f"epoch 1 alone: {first:.3f}x"
        )
    cores = os.cpu_count() or 0
    if cores <= 2:
        print(f"note: {cores} cores: the 2 ranks share them (2x32 is no speed-up here)")


if __name__ == "__main__":
    main()
