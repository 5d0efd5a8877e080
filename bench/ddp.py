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
  permutation, as :mod:`gradstep.data.sampler` deals them), ``DistributedDataParallel`` with
  its defaults, then zero_grad, forward, loss, backward, step; nothing else. One process runs
  the plain model (no DDP). Timed on rank 0 from a barrier before the first epoch to the end
  of the last;
* ``gradstep``: ``gs.Trainer(...).fit`` on the same tensors, under
  ``python -m torch.distributed.run --standalone --nproc-per-node 2`` (one process: plain
  ``python``), with no checkpoints, no TensorBoard, no plots, no progress bar and no gradient-norm
  monitoring (the hand loop saves nothing and measures no gradient), but its default progress
  lines (every 50 steps) and train loss/accuracy. Its time is the fit's own: ``train_time_s``
  and ``samples_per_second`` from the run's ``summary.json`` (the loop, not the start-up);
* ``lightning`` (``strategy="ddp"``) and ``accelerate`` (``Accelerator(cpu=True)``, model
  and optimizer prepared), 2 x 32 under the same torchrun, where they are installed (an
  optional extra used only by bench/: ``pip install -e '.[peers]'``). They are fed the same
  per-rank micro-batches by a sampler of index batches (``DataLoader(batch_size=None)``: no
  per-sample collation), so the figures compare the training loops, not the data loaders;
  Lightning with no logger, progress bar, model summary or checkpoints.

No system validates (the training split only, for all alike). The first epoch is counted, for
all alike. ``loss after`` is the training loss of rank 0's final weights (outside the timing):
the hand loop and gradstep with the same world train the same samples in the same order from
the same initial weights, so theirs agree; 1 x 64 and 2 x 32 differ only by summation order
and (the CNN) each rank's BatchNorm statistics.

Rounds alternate the order of the systems (reversed every other round); printed per workload,
system and world: samples/s (median over rounds, min-max), the loss after, and gradstep's step
time over the hand-written loop's with the same world (median over rounds of the paired ratio).
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
    torch.save({"x": x.contiguous(), "y": y.contiguous()}, dest)
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


class ShardSampler:
    """``rank_batches`` as a DataLoader sampler of index batches (epochs counted from 1, as
    gradstep's); ``set_epoch`` is what Lightning calls with its 0-based epoch."""

    def __init__(self, n: int, batch: int, rank: int, world: int) -> None:
        self.n, self.batch, self.rank, self.world = n, batch, rank, world
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch + 1

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(rank_batches(self.n, self.epoch, self.batch, self.rank, self.world))

    def __len__(self) -> int:
        return -(-self.n // (self.batch * self.world))


class IndexBatches(torch.utils.data.Dataset):
    """``dataset[idx]`` for a tensor of indices: the whole micro-batch, by ``index_select``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x.index_select(0, idx), self.y.index_select(0, idx)


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
    n = len(y)
    if world > 1:
        torch.distributed.barrier()
    t0 = time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        net.train()
        for idx in rank_batches(n, epoch, a.batch, rank, world):
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            optimizer.zero_grad()
            loss = criterion(net(xb), yb)
            loss.backward()
            optimizer.step()
    elapsed = time.perf_counter() - t0
    if world > 1:
        torch.distributed.destroy_process_group()
    return {"time_s": elapsed, "samples_per_s": n * a.epochs / elapsed, "model": model}


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
    if int(os.environ.get("RANK", "0")) == 0:
        (summary,) = Path(a.run_dir).glob("*/summary.json")
        timings = json.loads(summary.read_text())["timings"]
        result.update(time_s=timings["train_time_s"], samples_per_s=timings["samples_per_second"])
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
        def on_train_start(self, trainer: L.Trainer, _: L.LightningModule) -> None:
            trainer.strategy.barrier()
            self.t0 = time.perf_counter()

        def on_train_end(self, trainer: L.Trainer, _: L.LightningModule) -> None:
            self.elapsed = time.perf_counter() - self.t0

    loader = torch.utils.data.DataLoader(
        IndexBatches(x, y), batch_size=None, sampler=ShardSampler(len(y), a.batch, rank, world)
    )
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
    n = len(y)
    return {"time_s": clock.elapsed, "samples_per_s": n * a.epochs / clock.elapsed, "model": model}


def child_accelerate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace
) -> dict:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    net, optimizer = accelerator.prepare(model, optimizer)  # DDP when several processes
    criterion = nn.CrossEntropyLoss()
    n = len(y)
    accelerator.wait_for_everyone()
    t0 = time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        net.train()
        for idx in rank_batches(n, epoch, a.batch, rank, world):
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            optimizer.zero_grad()
            loss = criterion(net(xb), yb)
            accelerator.backward(loss)
            optimizer.step()
    elapsed = time.perf_counter() - t0
    accelerator.end_training()
    return {"time_s": elapsed, "samples_per_s": n * a.epochs / elapsed, "model": model}


def child(a: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")  # the peers' advice (num_workers, ...) is not a result
    data = torch.load(a.data, weights_only=True)
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
    """Run one system once; its result (``time_s``, ``samples_per_s``, ``loss``)."""
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
        str(tmp / "data.pt"),
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
    print(
        f"  {model} {system} {world}x{batch}: {result['samples_per_s']:,.0f} samples/s "
        f"({time.perf_counter() - t0:.1f} s with start-up)",
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
    widths = [10, 11, 7, 28, 11, 0]
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median over them)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run")
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
    if unknown or a.rounds < 1 or a.epochs < 1:
        parser.error(f"--models takes simplenet,cnn (got {a.models}); --rounds, --epochs >= 1")
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
        n = prepare_data(a.limit, tmp / "data.pt")
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

    print(
        f"workload: MNIST example's training split, {n:,} samples, {a.epochs} epochs per run, "
        f"SGD lr {LR} momentum {MOMENTUM}, no validation; CPU, gloo, 1 thread per process; "
        f"{os.cpu_count()} cores; median of {a.rounds} rounds"
    )
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
    print(fmt_row([*header, "step time vs hand"]))
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
                        verdicts.append((model, world, batch, paired, pairs, verdict))
                spread = f"{statistics.median(sps):,.0f} ({min(sps):,.0f}-{max(sps):,.0f})"
                loss = f"{statistics.median(x['loss'] for x in runs_):.4f}"
                cells = [model, system, f"{world}x{batch}", spread, loss, ratio]
                print(fmt_row(cells))
    print()
    for model, world, batch, paired, pairs, verdict in verdicts:
        print(
            f"gradstep / hand-written DDP loop, {model} {world}x{batch}: {paired:.3f}x step time "
            f"(rounds {min(pairs):.3f}-{max(pairs):.3f}; target <= {TARGET}) {verdict}"
        )
    cores = os.cpu_count() or 0
    if cores <= 2:
        print(f"note: {cores} cores: the 2 ranks share them (2x32 is no speed-up here)")


if __name__ == "__main__":
    main()
