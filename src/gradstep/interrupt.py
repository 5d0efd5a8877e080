"""Interrupted is not lost: SIGINT (Ctrl-C) and SIGTERM (a cluster's pre-emption) during fit.

While :class:`StopOnSignal` is active (``Trainer.fit`` enters it in the main thread and restores
the previous handlers when it ends), the **first** SIGINT or SIGTERM only sets
:attr:`StopOnSignal.requested`. The loop reads that Python bool at each step boundary — no
system call, no device sync — and stops after the step under way: the step completes, its
callbacks run, and the run ends the way any stop does, with the final checkpoint (taken
mid-epoch when the epoch is not done, so a resume continues at the next step, bit-identical to a
run never stopped), ``summary.json`` with ``stop_reason = "interrupted"``, and the command that
continues it. ``Trainer.fit`` then raises :class:`Interrupted`, a ``KeyboardInterrupt``: the
caller asked to stop, so nothing after ``fit`` runs as if training had finished. The
``gradstep`` command exits 130 for SIGINT and 143 for SIGTERM (``128 + signal``, as a shell
reports a process a signal ended).

A **second** signal raises :class:`Interrupted` at once, wherever the process is (a slow step, a
validation, the final save): the checkpoints already written stay, and a resume continues from
the newest.

A signal that was ignored when fit began (``SIG_IGN``, e.g. SIGINT in a background job of a
non-interactive shell) stays ignored; outside the main thread nothing is installed (Python
allows signal handlers only there), so such a fit keeps today's behaviour.

Example::

    from gradstep.interrupt import Interrupted
    try:
        trainer.fit(model, train=(X, y))
    except Interrupted as stop:        # also caught by ``except KeyboardInterrupt``
        print(stop)                    # ... continue with: Trainer(...).fit(..., resume=...)
"""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal. ``signum``: which; ``exit_code``: ``128 + signum``; the
    message says where the run stopped and how to continue it."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or f"interrupted by {signal_name(signum)}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return str(self.args[0])


class StopOnSignal:
    """The flag the loop reads (:attr:`requested`) and the handlers that set it; a context
    manager. ``say`` is told once, at the first signal, what happens next."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.requested = False
        self.signum: int | None = None
        self.say = say
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # the second: stop now
            raise Interrupted(signum, f"stopped at once by a second {signal_name(signum)}")
        self.requested, self.signum = True, signum
        if self.say is not None:
            self.say(
                f"{signal_name(signum)} received: stopping after this step, with a checkpoint "
                "(send it again to stop at once)"
            )

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue
            self._previous[signum] = previous
            signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


def continue_command(run_dir: Path, source: str) -> str:
    """The one command that continues the run: ``gradstep resume RUN_DIR``, or for a run on
    in-memory data (which the command line cannot load) the Python call."""
    if source == "(python)":
        return f"Trainer(...).fit(model, train, resume={str(run_dir)!r})"
    return f"gradstep resume {shlex.quote(str(run_dir))}"


def interrupted(
    signum: int, state: Any, run_dir: Path | None, checkpointer: Any, source: str
) -> Interrupted:
    """The :class:`Interrupted` a run stopped cleanly by ``signum`` raises: where it stopped,
    the checkpoint it wrote, and the command that continues it."""
    where = (
        f"epoch {state.epoch}, after batch {state.batch}/{state.batches_per_epoch}"
        if state.in_epoch
        else f"the end of epoch {state.epoch}"
    )
    text = f"interrupted by {signal_name(signum)} at step {state.global_step} ({where})"
    if run_dir is None:
        return Interrupted(signum, text)
    name = f"step-{state.global_step:06d}"
    saved = checkpointer is not None and (checkpointer.directory / name).is_dir()
    if not saved:
        return Interrupted(signum, f"{text}; no checkpoint written at that step ({run_dir})")
    return Interrupted(
        signum, f"{text}, checkpoint {name}; continue with: {continue_command(run_dir, source)}"
    )


class NeverStop:
    """A flag that is never raised: what the loop reads when nothing installed handlers."""

    requested = False
