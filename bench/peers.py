"""gradstep against the hand-written loop and the other trainers, on the seeds' two workloads.

The workloads are those of the two tutorial scripts the project was built from ("the seeds"),
as issue #16 and ``../shared/data/README.md`` give their recipes (the scripts themselves are
not in the repository):

* ``A`` (seed 004): N = 10,000 samples of ``torch.randn(10)`` with ``torch.randint(2)`` labels
  (``torch.manual_seed(0)``), an MLP 10-50-2 (Linear, ReLU, Linear), cross-entropy, batch 32,
  SGD lr 0.01, ``--epochs`` epochs (default 5), no validation. The labels are random, so the
  accuracy shown is that of the trained weights on 2,000 held-out samples drawn the same way
  (``torch.manual_seed(1)``), computed after the timed fit: about 50 % for every system, a check
  that each one trained the same model, not a result;
* ``B`` (seed 001): MNIST from ``../shared/data/mnist`` (the official 10,000-image test split,
  read by gradstep's IDX reader once, in the driver), the first 8,000 images to train and the
  last 2,000 to validate, normalised with the tutorials' mean 0.1307 / std 0.3081, the 784-128-10
  SimpleNet (Flatten, Linear, ReLU, Linear), cross-entropy, batch 64, SGD lr 0.01 momentum 0.9,
  ``--epochs-b`` epochs (default 10), validation after every epoch for every system (under
  ``model.eval()`` and no gradient, batch 64). The accuracy shown is the final weights' on the
  2,000 validation images, computed after the fit by the same code for every system.

Every system trains the same model from the same initial weights (``torch.manual_seed(0)``
before it is built; Keras gets those weights copied in), with the same optimizer, epochs,
batch size and so the same number of steps; each shuffles the training set every epoch in its
own way (that is part of what each one costs):

* ``hand``: the fastest hand-written loop — each epoch indexes the tensors with one
  ``randperm`` and slices the shuffled copy into micro-batches: zero_grad, forward, loss,
  backward, step; nothing else (on B, its validation pass: loss and correct count summed on the
  device, read once per epoch);
* ``dataloader``: the seeds' own loop, ``TensorDataset`` + ``DataLoader(shuffle=True)``;
* ``gradstep-bare``: ``gs.Trainer(...).fit`` with no gradient-norm monitoring, no checkpoints,
  no TensorBoard, no plots and no printed diagnosis (its progress lines every 50 steps,
  metrics.jsonl, config.toml and summary.json stay: a run directory in a temporary folder);
* ``gradstep``: ``gs.Trainer(...).fit`` with the project's defaults — per-epoch checkpoints,
  TensorBoard, gradient-norm monitoring, plots and the diagnosis at the end;
* ``lightning-bare``: ``L.Trainer(logger=False, enable_checkpointing=False,
  enable_progress_bar=False, enable_model_summary=False)``; ``lightning``: ``L.Trainer`` with
  its defaults (TensorBoard logger, a checkpoint every epoch, the progress bar, the model
  summary, its sanity-check validation). Both: CPU, ``devices=1``, ``max_epochs``, the usual
  ``LightningModule`` (``self.log`` of the training loss, and of the validation loss and
  accuracy), fed ``DataLoader(TensorDataset, shuffle=True)`` as Lightning's docs show;
* ``accelerate``: the standard loop around ``accelerator.prepare(model, optimizer,
  train_loader, val_loader)`` (``Accelerator(cpu=True)``), ``accelerator.backward``, and
  ``gather_for_metrics`` in validation;
* ``keras``: Keras 3 on its torch backend (``KERAS_BACKEND=torch``): the same layers as a
  ``keras.Sequential``, ``compile(SGD, SparseCategoricalCrossentropy(from_logits=True),
  metrics=["accuracy"])`` and ``model.fit(x, y, batch_size, epochs, validation_data,
  shuffle=True)`` on NumPy arrays with its defaults — ``verbose="auto"``, which is a progress
  bar that, written to a file as here, is one line per update at most every 0.05 s.

What is timed: each (system, workload) runs in its own process, started afresh for every
round. The child reports three figures: ``import`` (``import torch``, ``torch._dynamo`` and
safetensors, then the system's own package: torch imports its compiler lazily, at the first
optimizer built — in one system's set-up, inside another's fit, in a third's import — so every
child imports it here, where it is torch's cost for all alike), ``set-up`` (reading the data
file, building the model, optimizer, loaders, ``Trainer`` / ``Accelerator`` with its
``prepare`` / compiled Keras model), and ``fit`` — the one call a user makes to train, timed
alone: the hand-written epochs, ``trainer.fit``, ``model.fit``. What each system does inside
that call counts (gradstep's and Lightning's own set-up and wrap-up: run directory, pre-flight
probe, plots, summary). Every child writes its output (progress lines, bars) to a file, as a
run with its output redirected would (``--logs DIR`` keeps them). For the gradstep rows, the
driver also prints where the fit's time went (before the loop, the loop, after it) from the
run's ``summary.json`` timings; the progress lines on stderr show each child's figures and,
where the system times its own epochs, each epoch's seconds. Rounds alternate the order of the
systems (reversed every other round); the figures are medians over ``--rounds`` rounds (default
3), with min-max. Every child runs with the same thread count (``--threads``, default 1:
``torch.set_num_threads`` and ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``), and the driver checks
the count each one still had after its fit.

Printed per workload and system: fit seconds, median (min-max); its ratio to the hand loop's
median; import and set-up seconds (medians); the final accuracy; the epochs run. Then the
hand loop's spread, (max - min) / median of its fit, which is the measure of how quiet the
machine was: **on a noisy (shared, 2-core) machine, read every ratio against that spread**.

Targets (each printed as met / not met, with its figure):

* ``gradstep-bare`` <= 1.05x the hand-written loop on A;
* ``gradstep`` (defaults) faster than every peer's defaults (``lightning``, ``accelerate``,
  ``keras``) on A and on B.

The peers are installed only for this benchmark: ``pip install -e '.[peers]'`` (``make bench``
does it). A peer that is not installed has a row saying so, and the run goes on.

    python bench/peers.py [--rounds 3] [--epochs 5] [--epochs-b 10] [--threads 1]
                          [--systems hand,gradstep,...] [--workloads A,B] [--limit N]
                          [--logs DIR]
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
SYSTEMS = (
    "hand",
    "dataloader",
    "gradstep-bare",
    "gradstep",
    "lightning-bare",
    "lightning",
    "accelerate",
    "keras",
)
# system -> the package it needs beyond torch (the peers: an optional extra, bench/ only)
PACKAGES = {
    "gradstep-bare": "gradstep",
    "gradstep": "gradstep",
    "lightning-bare": "lightning",
    "lightning": "lightning",
    "accelerate": "accelerate",
    "keras": "keras",
}
PEERS = ("lightning-bare", "lightning", "accelerate", "keras")
PEER_DEFAULTS = ("lightning", "accelerate", "keras")  # what "gradstep" (defaults) must beat
INSTALL = "not installed (pip install -e '.[peers]')"
HIDE_ENV = "GRADSTEP_BENCH_HIDE"  # modules a child must not find (see Hide)
TARGET_BARE = 1.05
# the seeds' settings: samples (train), held-out / validation samples, layer widths, batch, SGD
WORKLOADS: dict[str, dict[str, Any]] = {
    "A": {"seed": "004", "n": 10_000, "heldout": 2_000, "features": 10, "hidden": 50},
    "B": {"seed": "001", "n": 8_000, "heldout": 2_000, "features": 784, "hidden": 128},
}
WORKLOADS["A"].update(classes=2, batch=32, lr=0.01, momentum=0.0, validate=False)
WORKLOADS["B"].update(classes=10, batch=64, lr=0.01, momentum=0.9, validate=True)
WORKLOADS["B"].update(mean=0.1307, std=0.3081)  # the tutorials' MNIST normalisation


# ---------------------------------------------------------------------------------------------
# the data, made once by the driver


def prepare_data(workload: str, limit: int | None, dest: Path) -> dict[str, int]:
    """Workload ``workload``'s tensors, saved to ``dest`` for the children: ``x``, ``y`` (train)
    and ``xv``, ``yv`` (B: validation; A: the held-out samples). ``limit``: the first ``limit``
    training samples and the first ``limit // 4`` (at least 1) of the others."""
    import torch
    from safetensors.torch import save_file

    w = WORKLOADS[workload]
    if workload == "A":  # seed 004: the tutorial's randn / randint
        torch.manual_seed(0)
        x, y = torch.randn(w["n"], w["features"]), torch.randint(0, w["classes"], (w["n"],))
        torch.manual_seed(1)
        xv = torch.randn(w["heldout"], w["features"])
        yv = torch.randint(0, w["classes"], (w["heldout"],))
    else:  # seed 001: the first 8,000 images train, the last 2,000 validate
        from gradstep.data.mnist import load_mnist

        images, labels, _ = load_mnist(MNIST, download_missing=False)  # float32 in [0, 1]
        images = (images - w["mean"]) / w["std"]
        x, y = images[: w["n"]], labels[: w["n"]]
        xv, yv = images[-w["heldout"] :], labels[-w["heldout"] :]
    if limit is not None:
        x, y = x[:limit], y[:limit]
        xv, yv = xv[: max(1, limit // 4)], yv[: max(1, limit // 4)]
    tensors = {"x": x, "y": y, "xv": xv, "yv": yv}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dest))
    return {"train": len(y), "heldout": len(yv)}


# ---------------------------------------------------------------------------------------------
# a child: one system on one workload, once


class Hide(importlib.abc.MetaPathFinder):
    """Makes ``import NAME`` fail for the top-level packages in ``$GRADSTEP_BENCH_HIDE`` exactly
    as for a package that is not installed (``ModuleNotFoundError``), so the bench's own test
    can take the "not installed" path on a machine where the peer is installed."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def make_model(w: dict[str, Any]) -> Any:
    """The seed's network, with the same initial weights in every system."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers = [nn.Flatten()] if w["features"] == 784 else []  # seed 001 flattens the images
    return nn.Sequential(
        *layers,
        nn.Linear(w["features"], w["hidden"]),
        nn.ReLU(),
        nn.Linear(w["hidden"], w["classes"]),
    )


def accuracy(predict: Any, x: Any, y: Any) -> float:
    """The fraction of ``y`` that ``predict`` (a batch of inputs -> logits) gets right: after
    the fit, untimed, the same code for every system."""
    import torch

    correct = 0
    with torch.no_grad():
        for xb, yb in zip(x.split(1000), y.split(1000), strict=True):
            correct += int((torch.as_tensor(predict(xb)).argmax(1) == yb).sum())
    return correct / len(y)


def torch_predict(model: Any) -> Any:
    model.eval()
    return model


def validate(model: Any, batches: Any, criterion: Any) -> tuple[float, float]:
    """One validation pass (eval mode, no gradient): mean loss and accuracy, summed on the
    device and read once (one host sync per epoch, as a loop that prints them)."""
    import torch

    model.eval()
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.long)
    n = 0
    with torch.no_grad():
        for xb, yb in batches:
            out = model(xb)
            loss_sum += criterion(out, yb) * len(yb)
            correct += (out.argmax(1) == yb).sum()
            n += len(yb)
    model.train()
    return loss_sum.item() / n, correct.item() / n  # the epoch's one read


def plain_loop(w: dict, a: argparse.Namespace, epoch_batches: Any, val: Any) -> dict:
    """The seeds' loop, timed: each epoch zero_grad, forward, loss, backward, step over
    ``epoch_batches()`` (called inside the epoch's timing: its shuffle counts), then the
    validation pass on B."""
    import torch
    from torch import nn

    model = make_model(w)
    optimizer = torch.optim.SGD(model.parameters(), lr=w["lr"], momentum=w["momentum"])
    criterion = nn.CrossEntropyLoss()
    steps, epoch_s = 0, []
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        started = time.perf_counter()
        model.train()
        for xb, yb in epoch_batches():
            optimizer.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            optimizer.step()
            steps += 1
        if val is not None:
            validate(model, val, criterion)
        epoch_s.append(time.perf_counter() - started)
    fit_s = time.perf_counter() - t0
    return {"fit_s": fit_s, "model": model, "epochs": a.epochs, "steps": steps, "epoch_s": epoch_s}


def child_hand(w: dict, d: dict, a: argparse.Namespace) -> dict:
    import torch

    x, y, b = d["x"], d["y"], w["batch"]
    n = len(y)
    val = list(zip(d["xv"].split(b), d["yv"].split(b), strict=True)) if w["validate"] else None

    def epoch_batches() -> Any:  # one randperm, the shuffled copy sliced
        perm = torch.randperm(n)
        xs, ys = x[perm], y[perm]
        return ((xs[i : i + b], ys[i : i + b]) for i in range(0, n, b))

    return plain_loop(w, a, epoch_batches, val)


def loaders(w: dict, d: dict) -> tuple[Any, Any]:
    from torch.utils.data import DataLoader, TensorDataset

    train = DataLoader(TensorDataset(d["x"], d["y"]), batch_size=w["batch"], shuffle=True)
    val = None
    if w["validate"]:
        val = DataLoader(TensorDataset(d["xv"], d["yv"]), batch_size=w["batch"])
    return train, val


def child_dataloader(w: dict, d: dict, a: argparse.Namespace) -> dict:
    train, val = loaders(w, d)
    return plain_loop(w, a, lambda: train, val)


def child_gradstep(w: dict, d: dict, a: argparse.Namespace) -> dict:
    import gradstep as gs

    bare = a.child == "gradstep-bare"
    off = dict(
        checkpoint_every="never",
        grad_norm=False,
        tensorboard=False,
        plots=False,
        print_diagnosis=False,
        progress=False,
    )
    model = make_model(w)
    trainer = gs.Trainer(
        name="bench",
        run_dir=a.run_dir,
        seed=0,
        epochs=a.epochs,
        batch_size=w["batch"],
        optimizer="sgd",
        lr=w["lr"],
        momentum=w["momentum"],
        val_split=0.0,  # A trains on all 10,000; B is given its validation images
        normalize=False,  # the driver normalised B with the seed's constants, for everyone
        device="cpu",
        **(off if bare else {}),
    )
    val = (d["xv"], d["yv"]) if w["validate"] else None
    t0 = time.perf_counter()
    result = trainer.fit(model, train=(d["x"], d["y"]), val=val)
    fit_s = time.perf_counter() - t0
    timings = result.summary["timings"]
    return {
        "fit_s": fit_s,
        "model": model,
        "epochs": len(result.history),
        "steps": result.summary["global_step"],
        # where the fit's time went: set-up inside fit, the loop, what follows the summary
        "before_loop_s": timings["wall_time_s"] - timings["train_time_s"],
        "loop_s": timings["train_time_s"],
        "after_loop_s": fit_s - timings["wall_time_s"],
        "epoch_s": [h["time_s"] for h in result.history],
    }


def child_lightning(w: dict, d: dict, a: argparse.Namespace) -> dict:
    import lightning as L
    import torch
    from torch import nn

    class Module(L.LightningModule):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net
            self.criterion = nn.CrossEntropyLoss()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            xb, yb = batch
            loss = self.criterion(self.net(xb), yb)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            xb, yb = batch
            out = self.net(xb)
            self.log("val_loss", self.criterion(out, yb))
            self.log("val_acc", (out.argmax(1) == yb).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=w["lr"], momentum=w["momentum"])

    model = make_model(w)
    module = Module(model)
    train, val = loaders(w, d)
    common: dict[str, Any] = dict(
        accelerator="cpu", devices=1, max_epochs=a.epochs, default_root_dir=a.run_dir
    )
    if a.child == "lightning-bare":
        common.update(
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    trainer = L.Trainer(**common)
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    fit_s = time.perf_counter() - t0
    return {
        "fit_s": fit_s,
        "model": model,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
    }


def child_accelerate(w: dict, d: dict, a: argparse.Namespace) -> dict:
    import torch
    from accelerate import Accelerator
    from torch import nn

    accelerator = Accelerator(cpu=True)
    model = make_model(w)
    optimizer = torch.optim.SGD(model.parameters(), lr=w["lr"], momentum=w["momentum"])
    criterion = nn.CrossEntropyLoss()
    train, val = loaders(w, d)
    if val is not None:
        net, optimizer, train, val = accelerator.prepare(model, optimizer, train, val)
    else:
        net, optimizer, train = accelerator.prepare(model, optimizer, train)
    steps, epoch_s = 0, []
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        started = time.perf_counter()
        net.train()
        for xb, yb in train:
            optimizer.zero_grad()
            loss = criterion(net(xb), yb)
            accelerator.backward(loss)
            optimizer.step()
            steps += 1
        if val is not None:
            net.eval()
            loss_sum = torch.zeros(())
            correct = torch.zeros((), dtype=torch.long)
            count = 0
            with torch.no_grad():
                for xb, yb in val:
                    out = net(xb)
                    loss_sum += criterion(out, yb) * len(yb)
                    preds, refs = accelerator.gather_for_metrics((out.argmax(1), yb))
                    correct += (preds == refs).sum()
                    count += len(refs)
            _ = loss_sum.item() / count, correct.item() / count  # the epoch's one read
        epoch_s.append(time.perf_counter() - started)
    fit_s = time.perf_counter() - t0
    accelerator.end_training()
    return {"fit_s": fit_s, "model": model, "epochs": a.epochs, "steps": steps, "epoch_s": epoch_s}


def child_keras(w: dict, d: dict, a: argparse.Namespace) -> dict:
    import keras

    torch_model = make_model(w)  # its initial weights, copied into the Keras layers
    linears = [m for m in torch_model if hasattr(m, "weight")]
    shape = tuple(d["x"].shape[1:])
    layers = [keras.Input(shape=shape)] + ([keras.layers.Flatten()] if len(shape) > 1 else [])
    model = keras.Sequential(
        [
            *layers,
            keras.layers.Dense(w["hidden"], activation="relu"),
            keras.layers.Dense(w["classes"]),
        ]
    )
    weights = []
    for lin in linears:  # torch's Linear holds W (out, in); Keras' Dense its kernel (in, out)
        weights += [lin.weight.detach().T.numpy().copy(), lin.bias.detach().numpy().copy()]
    model.set_weights(weights)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=w["lr"], momentum=w["momentum"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = d["x"].numpy(), d["y"].numpy()
    val = (d["xv"].numpy(), d["yv"].numpy()) if w["validate"] else None
    t0 = time.perf_counter()
    history = model.fit(
        x, y, batch_size=w["batch"], epochs=a.epochs, validation_data=val, shuffle=True
    )  # verbose="auto": its default
    fit_s = time.perf_counter() - t0
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))

    def predict(xb: Any) -> Any:
        return model.predict(xb.numpy(), batch_size=1000, verbose=0)

    return {
        "fit_s": fit_s,
        "predict": predict,
        "epochs": len(history.history["loss"]),
        "steps": steps,
    }


CHILDREN = {
    "hand": child_hand,
    "dataloader": child_dataloader,
    "gradstep-bare": child_gradstep,
    "gradstep": child_gradstep,
    "lightning-bare": child_lightning,
    "lightning": child_lightning,
    "accelerate": child_accelerate,
    "keras": child_keras,
}


def child(a: argparse.Namespace) -> None:
    hidden = {m for m in os.environ.get(HIDE_ENV, "").split(",") if m}
    if hidden:
        sys.meta_path.insert(0, Hide(hidden))
    out = Path(a.out)
    package = PACKAGES.get(a.child)
    t0 = time.perf_counter()
    import torch
    import torch._dynamo  # (see below)
    from safetensors.torch import load_file

    # torch imports its compiler (~1-2 s) lazily, at the first optimizer built: in a set-up for
    # one system, inside the fit for another (gradstep builds its optimizer in fit), in the
    # import of a third (lightning imports it). It is torch's import, so every child pays it
    # here, in "import".
    torch.set_num_threads(a.threads)
    if package == "keras":
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        lib = __import__(package) if package else torch
    except ModuleNotFoundError as err:  # not installed (or hidden: the same error)
        out.write_text(json.dumps({"missing": package, "error": str(err)}) + "\n")
        return
    import_s = time.perf_counter() - t0
    warnings.filterwarnings("ignore")  # the peers' advice (num_workers, ...) is not a result
    t0 = time.perf_counter()
    w = WORKLOADS[a.workload]
    data = load_file(a.data)
    result = CHILDREN[a.child](w, data, a)
    fit_s = result.pop("fit_s")
    setup_s = time.perf_counter() - t0 - fit_s
    threads = torch.get_num_threads()
    predict = result.pop("predict", None) or torch_predict(result.pop("model"))
    acc = accuracy(predict, data["xv"], data["yv"])
    line = {
        "system": a.child,
        "workload": a.workload,
        "import_s": import_s,
        "setup_s": setup_s,
        "fit_s": fit_s,
        "acc": acc,
        "threads": threads,
        "version": getattr(lib, "__version__", "?"),
        "torch": torch.__version__,
        **result,
    }
    out.write_text(json.dumps(line) + "\n")


# ---------------------------------------------------------------------------------------------
# the driver: rounds of every (system, workload), then the table


def child_env(threads: int, hide: str) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.update(PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="", KERAS_BACKEND="torch")
    env.pop(HIDE_ENV, None)
    if hide:
        env[HIDE_ENV] = hide
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def launch(system: str, workload: str, a: argparse.Namespace, tmp: Path) -> dict:
    """Run ``system`` on ``workload`` once, in a fresh process; its JSON line."""
    out = tmp / f"{system}-{workload}.json"
    out.unlink(missing_ok=True)
    run_dir = tempfile.mkdtemp(dir=tmp, prefix=f"run-{system}-{workload}-")
    epochs = a.epochs if workload == "A" else a.epochs_b
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", system]
    cmd += ["--workload", workload, "--epochs", str(epochs), "--threads", str(a.threads)]
    cmd += ["--data", str(tmp / f"{workload}.safetensors"), "--out", str(out)]
    cmd += ["--run-dir", run_dir]
    logs = Path(a.logs) if a.logs else tmp
    log = logs / f"{system}-{workload}.log"
    t0 = time.perf_counter()
    with log.open("w") as sink:  # its progress lines and bars: to a file
        proc = subprocess.run(
            cmd,
            env=child_env(a.threads, a.hide),
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=a.timeout,
            cwd=run_dir,
        )
    if proc.returncode != 0 or not out.is_file():
        lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"{system} {workload}: exit {proc.returncode}: " + lines[-1][:200])
    result = json.loads(out.read_text())
    if "missing" in result:
        print(f"  {workload} {system}: {INSTALL}", file=sys.stderr, flush=True)
        return result
    if result["epochs"] != epochs:
        raise RuntimeError(f"{system} {workload}: ran {result['epochs']} epochs, not {epochs}")
    epoch_s = result.get("epoch_s")
    epochs_note = ""
    if epoch_s:  # where the system times its own epochs (gradstep's: training only)
        epochs_note = f", epochs {' '.join(f'{t:.3f}' for t in epoch_s)} s"
    print(
        f"  {workload} {system}: fit {result['fit_s']:.2f} s, import {result['import_s']:.2f} s, "
        f"set-up {result['setup_s']:.2f} s, acc {result['acc']:.4f}, "
        f"{result['steps']} steps{epochs_note} ({time.perf_counter() - t0:.1f} s with start-up)",
        file=sys.stderr,
        flush=True,
    )
    return result


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def fmt_row(cells: list[str]) -> str:
    widths = [15, 23, 8, 9, 9, 8, 0]
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def describe(workload: str, a: argparse.Namespace, sizes: dict[str, int]) -> str:
    w = WORKLOADS[workload]
    if workload == "A":
        return (
            f"A (seed {w['seed']}): {sizes['train']:,} randn({w['features']}) samples, "
            f"{w['classes']} classes, MLP {w['features']}-{w['hidden']}-{w['classes']}, batch "
            f"{w['batch']}, SGD lr {w['lr']}, {a.epochs} epochs, no validation (accuracy: "
            f"{sizes['heldout']:,} held-out samples, after the fit)"
        )
    return (
        f"B (seed {w['seed']}): MNIST SimpleNet 784-{w['hidden']}-10, {sizes['train']:,} train / "
        f"{sizes['heldout']:,} validation, normalised ({w['mean']}, {w['std']}), batch "
        f"{w['batch']}, SGD lr {w['lr']} momentum {w['momentum']}, {a.epochs_b} epochs, "
        "validation every epoch"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median over them)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of workload A")
    parser.add_argument("--epochs-b", type=int, default=10, help="epochs of workload B")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, every child")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated systems")
    parser.add_argument("--workloads", default="A,B", help="comma-separated: A,B")
    parser.add_argument(
        "--limit", type=int, default=None, help="the first N training samples (N/4 held out)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per child")
    parser.add_argument("--logs", help="a folder to keep each child's output in (its last run)")
    parser.add_argument(
        "--hide",
        default="",
        help="comma-separated packages the children must not find (as if not installed)",
    )
    # a child run (started by the driver)
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=tuple(WORKLOADS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        child(a)
        return

    systems = [s for s in a.systems.split(",") if s]
    workloads = [w for w in a.workloads.split(",") if w]
    if any(s not in SYSTEMS for s in systems) or "hand" not in systems:
        parser.error(f"--systems: hand and any of {', '.join(SYSTEMS[1:])} (got {a.systems})")
    if not workloads or any(w not in WORKLOADS for w in workloads):
        parser.error(f"--workloads takes A,B (got {a.workloads})")
    if a.rounds < 1 or a.epochs < 1 or a.epochs_b < 1 or a.threads < 1:
        parser.error("--rounds, --epochs, --epochs-b and --threads are >= 1")
    if a.limit is not None and a.limit < 1:
        parser.error("--limit is >= 1")

    results: dict[tuple[str, str], list[dict]] = {}
    missing: dict[str, str] = {}  # system -> the package it lacks
    failed: dict[str, str] = {}
    versions: dict[str, str] = {}
    runs = [(w, s) for w in workloads for s in systems]
    if a.logs:
        Path(a.logs).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gradstep-bench-peers-") as name:
        tmp = Path(name)
        sizes = {w: prepare_data(w, a.limit, tmp / f"{w}.safetensors") for w in workloads}
        for r in range(a.rounds):
            order = runs if r % 2 == 0 else runs[::-1]  # alternate the order of the systems
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr, flush=True)
            for workload, system in order:
                if system in missing or system in failed:
                    continue
                try:
                    res = launch(system, workload, a, tmp)
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    if system not in PEERS:
                        raise
                    failed[system] = str(err)  # a peer's failure: noted, the run goes on
                    continue
                if "missing" in res:
                    missing[system] = res["missing"]
                    continue
                versions.setdefault("torch", res["torch"])
                if system in PACKAGES:
                    versions.setdefault(PACKAGES[system], res["version"])
                results.setdefault((workload, system), []).append(res)

    print(
        f"peers benchmark: median of {a.rounds} rounds, each (system, workload) in its own "
        f"process, the order of the systems reversed every other round; {a.threads} "
        f"thread(s) per process; {os.cpu_count()} cores"
    )
    print("timed: the fit call alone; import and set-up apart; accuracy after the fit, untimed")
    changed = sorted(
        {f"{s} ({r['threads']})" for (_, s), rs in results.items() for r in rs}
        - {f"{s} ({a.threads})" for (_, s) in results}
    )
    if changed:
        print(f"threads: not {a.threads} after the fit in: {', '.join(changed)}")
    print(", ".join(f"{k} {v}" for k, v in versions.items()))
    print()
    bare_ratio = None
    verdicts: list[str] = []
    for workload in workloads:
        print(f"workload {describe(workload, a, sizes[workload])}")
        header = ["system", "fit s median (min-max)", "x hand", "import s", "set-up s"]
        print(fmt_row([*header, "acc", "epochs"]))
        hand = results.get((workload, "hand"))
        hand_med = statistics.median(r["fit_s"] for r in hand) if hand else None
        medians: dict[str, float] = {}
        for system in systems:
            if system in missing:
                print(fmt_row([system, INSTALL, "", "", "", "", ""]))
                continue
            if system in failed:
                print(fmt_row([system, f"failed ({failed[system]})", "", "", "", "", ""]))
                continue
            rows = results.get((workload, system))
            if not rows:
                continue
            fits = [r["fit_s"] for r in rows]
            medians[system] = med = statistics.median(fits)
            ratio = f"{med / hand_med:.3f}x" if hand_med else ""
            cells = [
                system,
                spread(fits),
                ratio,
                f"{statistics.median(r['import_s'] for r in rows):.2f}",
                f"{statistics.median(r['setup_s'] for r in rows):.2f}",
                f"{statistics.median(r['acc'] for r in rows):.4f}",
                str(rows[0]["epochs"]),
            ]
            print(fmt_row(cells))
        if hand:
            fits = [r["fit_s"] for r in hand]
            print(
                f"hand loop spread on {workload}: {min(fits):.3f}-{max(fits):.3f} s, "
                f"{(max(fits) - min(fits)) / hand_med:.1%} of its median {hand_med:.3f} s "
                "(the machine's quietness: read the ratios against it)"
            )
        for system in ("gradstep-bare", "gradstep"):
            rows = results.get((workload, system))
            if rows:
                parts = [
                    f"{statistics.median(r[k] for r in rows):.2f} s {label}"
                    for k, label in [
                        ("before_loop_s", "before the loop"),
                        ("loop_s", "the loop"),
                        ("after_loop_s", "after it"),
                    ]
                ]
                print(f"{system} fit on {workload}: " + ", ".join(parts) + " (medians)")
        if workload == "A" and hand_med and "gradstep-bare" in medians:
            bare_ratio = medians["gradstep-bare"] / hand_med
        if "gradstep" in medians:
            for peer in PEER_DEFAULTS:
                if peer not in systems:
                    continue
                if peer in medians:
                    ratio = medians["gradstep"] / medians[peer]
                    verdict = "met" if ratio < 1 else "not met"
                    verdicts.append(
                        f"target: gradstep (defaults) ahead of {peer} on {workload}: "
                        f"{medians['gradstep']:.2f} s vs {medians[peer]:.2f} s = {ratio:.3f}x "
                        f"its time: {verdict}"
                    )
                else:
                    why = INSTALL if peer in missing else "failed"
                    verdicts.append(
                        f"target: gradstep (defaults) ahead of {peer} on {workload}: "
                        f"not measured ({why})"
                    )
        print()
    if bare_ratio is not None:
        verdict = "met" if bare_ratio <= TARGET_BARE else "not met"
        print(
            f"target: gradstep-bare <= {TARGET_BARE}x the hand-written loop on A: "
            f"{bare_ratio:.3f}x: {verdict}"
        )
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
