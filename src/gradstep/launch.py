"""``gradstep fit CONFIG --nproc N`` (and ``resume --nproc N``): start N processes on this
machine with torchrun's own elastic agent, so a user never has to learn torchrun for one
machine.

This is ``torchrun --standalone --nproc-per-node N --max-restarts K -m gradstep fit CONFIG``
done through the agent's Python API (:func:`torch.distributed.launcher.api.elastic_launch`): a
c10d rendezvous on a free port of this machine, a fresh run id, ``[dist] max_restarts``
restarts (each resumes from the newest checkpoint: :mod:`gradstep.elastic`). What differs from
calling torchrun: each worker gets ``OMP_NUM_THREADS = cores // N`` (at least 1) unless you set
it — torchrun sets 1 and warns — and the exit status is the failed worker's own (2 for bad
input, 130 / 143 for a signal, 1 for an error), with one line naming the rank when it died
without saying why (killed by a signal). For several machines use torchrun itself (the README's
"Several processes and machines").

Example::

    gradstep fit examples/mnist_simplenet.toml --nproc 2 --set dist.max_restarts=2
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Sequence

from gradstep.errors import UserError


def under_torchrun() -> bool:
    """True in a worker torchrun (or ``--nproc``) started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def check_nproc(nproc: int | None) -> None:
    """``nproc`` for a Python-API fit: only as the world size torchrun gave this process."""
    if nproc is None:
        return
    from gradstep import dist

    world = dist.world_size()
    if under_torchrun() and nproc == world:
        return
    if under_torchrun():
        raise UserError(f"nproc={nproc}, but torchrun started {world} processes")
    if nproc > 1:
        raise UserError(
            f"nproc={nproc}: a Python script runs on several processes under torchrun: "
            f"`torchrun --standalone --nproc-per-node {nproc} script.py` runs the script in "
            "each, and fit shards the data and syncs the ranks itself (or: gradstep fit "
            f"CONFIG --nproc {nproc})"
        )


def launch(command: Sequence[str], nproc: int, max_restarts: int) -> int:
    """Run ``gradstep COMMAND...`` on ``nproc`` local processes; return the exit status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if under_torchrun():
        raise UserError("--nproc inside a torchrun job: leave it out (torchrun set the processes)")
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads is None:  # for the workers (the agent passes this process's value on)
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    # the agent's own log lines (a failed worker's pid and binary): the worker said why
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=max_restarts,
        monitor_interval=0.1,
        start_method="spawn",
        shutdown_timeout=120,  # a signalled worker finishes its step, checkpoint and summary
    )
    try:
        elastic_launch(config, sys.executable)("-m", "gradstep", *command)
    except SignalException as err:  # Ctrl-C / SIGTERM: the workers stopped after their step
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = failure.exitcode
        if code < 0:  # killed by a signal: it said nothing itself
            print(
                f"gradstep: error: rank {rank} was killed by {failure.signal_name()}"
                + (f" after {max_restarts} restarts" if max_restarts else ""),
                file=sys.stderr,
            )
            return 128 - code
        return code or 1
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
    return 0
