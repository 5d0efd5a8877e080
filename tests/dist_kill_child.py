"""A training process for the distributed kill tests, run under torchrun.

    python -m torch.distributed.run --standalone --nproc-per-node 2 [--max-restarts 2] \\
        dist_kill_child.py RUNS NAME SETTINGS KILL

SETTINGS: ``dropout`` (an MLP with dropout 0.3: every rank's generator matters; the same world
size resumes bit-identical) or ``plain`` (no dropout: another world size resumes to float
tolerance), or ``dataset`` (``dropout`` on a generic Dataset of 163 + 40 samples, through
the Python API: the DataLoader path); all Adam, ``effective_batch`` 32, checkpoints every 2
steps, validation every 5. The other two train on the built-in ``random`` source, so
``gradstep resume RUN`` can continue them.

KILL, done on the first attempt only (``TORCHELASTIC_RESTART_COUNT`` 0), with SIGKILL:
``none``; ``rank1-step:N`` — rank 1 right after step N's ``on_step_end`` (mid-epoch);
``all-step:N`` — every rank there (the whole job dies); ``rank0-write:N`` — rank 0 right
after the N-th checkpoint file is written, before its directory is renamed into place;
``rank0-full:N`` — rank 0's disk is full from its N-th checkpoint file on (a failed save: with
``on_save_error = "stop"`` every rank stops at the same step).
"""

from __future__ import annotations

import errno
import os
import signal
import sys

import gradstep as gs
from gradstep.checkpoint import files

BASE = dict(
    source="random",
    n=203,
    features=6,
    classes=3,
    val_split=0.2,
    epochs=3,
    batch_size=8,
    effective_batch=32,
    optimizer="adam",
    lr=0.01,
    log_every=3,
    val_every=5,
    checkpoint_every=2,
    checkpoint_keep=10,
    progress=False,
    plots=False,
    tensorboard=False,
    print_diagnosis=False,
    seed=7,
    model="mlp",
)
SETTINGS = {
    "dropout": {**BASE, "model_args": {"hidden": [16], "dropout": 0.3}},
    "plain": {**BASE, "model_args": {"hidden": [16]}},
}


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(gs.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state) -> None:
        if state.global_step == self.step:
            die()


def main() -> None:
    runs, name, settings, kill = sys.argv[1:5]
    rank = int(os.environ.get("RANK", "0"))
    first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    callbacks: list[gs.Callback] = []
    if kill != "none" and first:
        kind, n = kill.split(":")
        if kind == "all-step" or (kind == "rank1-step" and rank == 1):
            callbacks.append(KillAt(int(n)))
        if kind == "rank0-write" and rank == 0:
            count = [0]

            def hook(path) -> None:
                count[0] += 1
                if count[0] == int(n):
                    die()

            files._after_file_hook = hook
        if kind == "rank0-full" and rank == 0:  # from the N-th file on, the disk is full
            written = [0]

            def full(path) -> None:
                written[0] += 1
                if written[0] >= int(n):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

            files._after_file_hook = full
    if settings.startswith("dataset"):  # a generic Dataset: the DataLoader path
        # dataset-129: 9 blocks of 2 × 8 an epoch, the last of 1 sample: rank 1's share empty
        n = 129 if settings == "dataset-129" else 163
        trainer = gs.Trainer(run_dir=runs, name=name, callbacks=callbacks, **SETTINGS["dropout"])
        trainer.fit(train=dataset(0, n), val=dataset(1, 40))
        return
    trainer = gs.Trainer(run_dir=runs, name=name, callbacks=callbacks, **SETTINGS[settings])
    trainer.fit()


def dataset(seed: int, n: int):
    import torch
    from torch.utils.data import Dataset

    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)

    class Samples(Dataset):  # not a TensorDataset: read item by item through a DataLoader
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int):
            return x[i], y[i]

    return Samples()


if __name__ == "__main__":
    main()
