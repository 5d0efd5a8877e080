"""Who am I in a (future) torchrun job: rank, world size, and the one "main process" check.

gradstep runs in one process today; distributed training comes later. Everything that writes a file
or prints goes through :func:`is_main_process`, and the sampler shards by :func:`rank` and
:func:`world_size`, so adding DDP changes this module, not every writer.

torchrun's contract: it starts ``WORLD_SIZE`` processes and sets ``RANK`` (global) and
``LOCAL_RANK`` (on this node) in each one's environment; rank 0 is the main process.
"""

from __future__ import annotations

import os


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes train together (1 when not distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True in the one process that writes files and prints progress."""
    return rank() == 0
