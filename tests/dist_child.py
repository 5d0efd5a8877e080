"""A training process for the distributed tests, run under torchrun (or alone, for the
single-process reference).

    python -m torch.distributed.run --standalone --nproc-per-node 2 dist_child.py RUNS NAME JSON

JSON: the Trainer's settings (``{"batch_size": 16, "optimizer": "adam", ...}``) plus
``"n"`` (samples of the generated data, default 1003) and ``"fail_rank"`` (that rank raises in
step 3). The data are the same on every rank and in every process: a seeded blob of 10
features and 3 classes, 20 % of it validation. Under DDP, rank 0 counts the gradient
all-reduces (a DDP communication hook) and writes the count to ``RUNS/NAME.allreduces``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import gradstep as gs


class CountAllReduces(gs.Callback):
    """Count the buckets DDP all-reduces (its default hook, counted); rank 0 writes the count
    and the steps at the end."""

    def __init__(self, path: Path) -> None:
        self.path, self.calls = path, 0

    def on_fit_start(self, state) -> None:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def hook(process_group, bucket):
            self.calls += 1
            return allreduce_hook(process_group, bucket)

        if hasattr(state.model, "register_comm_hook"):
            state.model.register_comm_hook(None, hook)

    def on_fit_end(self, state) -> None:
        if os.environ.get("RANK") == "0":
            self.path.write_text(json.dumps({"calls": self.calls, "steps": state.global_step}))


class FailOn(gs.Callback):
    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_step_end(self, state) -> None:
        if state.global_step == 3 and int(os.environ.get("RANK", "0")) == self.rank:
            raise RuntimeError(f"rank {self.rank} failed on purpose")


def data(n: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 10, generator=g)
    w = torch.randn(10, 3, generator=g)
    y = (x @ w + 0.5 * torch.randn(n, 3, generator=g)).argmax(1)
    cut = n * 4 // 5
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def main() -> None:
    runs, name, raw = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    n = raw.pop("n", 1003)
    callbacks: list[gs.Callback] = [CountAllReduces(Path(runs) / f"{name}.allreduces")]
    if "fail_rank" in raw:
        callbacks.append(FailOn(raw.pop("fail_rank")))
    train, val = data(n)
    settings = dict(
        run_dir=runs,
        name=name,
        model="mlp",
        model_args={"hidden": [16]},
        epochs=3,
        progress=False,
        plots=False,
        tensorboard=False,
        print_diagnosis=False,
        log_every=5,
        seed=5,
    )
    settings.update(raw)
    gs.Trainer(callbacks=callbacks, **settings).fit(train=train, val=val)


if __name__ == "__main__":
    main()
