"""A training process for the kill tests: trains (or resumes) and SIGKILLs itself at a point.

    python kill_child.py RUNS NAME KILL [resume]

KILL is ``none`` or ``KIND:N``: ``forward:N`` — the N-th training forward pass (mid-epoch,
mid-accumulation group); ``val:N`` — the N-th validation forward pass; ``write:N`` — right after
the N-th checkpoint file is written, before its directory is renamed into place; ``step:N`` —
right after step N's ``on_step_end`` (a checkpoint may be being written in the background);
``pause:N`` — in step N's ``on_step_end``, write ``RUNS/NAME.paused`` and wait (at most a
minute) for ``RUNS/NAME.go``: the test then signals or kills the process, or runs another one
against the same run, while this one is known to be mid-epoch and writing the run.

A run a signal stopped (:class:`gradstep.interrupt.Interrupted`) exits with its code, 130 or 143,
as the ``gradstep`` command does.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import gradstep as gs
from gradstep.checkpoint import files
from gradstep.interrupt import Interrupted

# Adam (tensor state), dropout (the global RNG), BatchNorm (buffers), accumulation 3 over 16
# micro-batches (a trailing group of one), checkpoints every 2 steps (mid-epoch), val_every 5;
# a per-step warm-up cosine schedule, clipping, the gradient monitor with per-layer norms, and
# early stopping keeping its best weights (patience too long to stop): their state resumes too.
SETTINGS = dict(
    source="random",
    n=155,
    features=6,
    classes=3,
    val_split=0.2,
    epochs=3,
    batch_size=8,
    accumulate=3,
    model="mlp",
    model_args={"hidden": [16, 12], "dropout": 0.3, "batchnorm": True},
    optimizer="adam",
    lr=0.01,
    log_every=2,
    val_every=5,
    checkpoint_every=2,
    checkpoint_keep=10,
    progress=False,
    seed=7,
    schedule="warmup_cosine",
    schedule_interval="step",
    clip_norm=1.0,
    grad_norm_per_layer=True,
    patience=50,
    plots=False,
)


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class Killer(gs.Callback):
    def __init__(self, kind: str, n: int) -> None:
        self.kind, self.n, self.count = kind, n, 0

    def _forward(self, module, inputs, output) -> None:
        if (self.kind == "forward") == module.training:
            self.count += 1
            if self.count == self.n:
                die()

    def on_fit_start(self, state) -> None:
        if self.kind in ("forward", "val"):
            state.model.register_forward_hook(self._forward)

    def on_step_end(self, state) -> None:
        if self.kind == "step" and state.global_step == self.n:
            die()
        if self.kind == "pause" and state.global_step == self.n:
            pause(self.flag)


def pause(flag: Path) -> None:
    """Say so (``NAME.paused``), then wait for ``NAME.go``; signals are handled meanwhile."""
    flag.with_suffix(".paused").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not flag.with_suffix(".go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def main() -> None:
    runs, name, kill = sys.argv[1], sys.argv[2], sys.argv[3]
    resume = len(sys.argv) > 4
    callbacks = []
    if kill != "none":
        kind, n = kill.split(":")
        if kind == "write":
            count = [0]

            def hook(path) -> None:
                count[0] += 1
                if count[0] == int(n):
                    die()

            files._after_file_hook = hook
        else:
            callbacks.append(Killer(kind, int(n)))
    for cb in callbacks:
        cb.flag = Path(runs) / name
    trainer = gs.Trainer(run_dir=runs, name=name, callbacks=callbacks, **SETTINGS)
    try:
        trainer.fit(resume=os.path.join(runs, name) if resume else None)
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    main()
