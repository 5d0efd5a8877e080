"""Checkpoints: atomic safetensors + JSON directories, verified before every load; exact resume.

* :mod:`~gradstep.checkpoint.files` — the on-disk format: atomic write, manifest, verification,
  refusing pickles and malformed safetensors;
* :mod:`~gradstep.checkpoint.encoding` — tensors to safetensors bytes (the snapshot's copy);
* :mod:`~gradstep.checkpoint.content` — model, optimizer and RNG state to tensors + JSON and back;
* :mod:`~gradstep.checkpoint.writer` — background writing, ``latest`` / ``best``, pruning;
* :mod:`~gradstep.checkpoint.load` — finding a checkpoint from a path, ``load_model``;
* :mod:`~gradstep.checkpoint.resume` — choosing the checkpoint to resume, refusing a mismatched
  run, restoring everything.

Layout of one checkpoint (``runs/<name>/checkpoints/step-000123/``)::

    model.safetensors       parameters and buffers (model.state_dict())
    optimizer.safetensors   the optimizer's per-parameter tensors
    model.json              constructor name and args, task, preprocessing (what inference needs)
    state.json              progress, optimizer param_groups, callbacks, RNG, history, fingerprint
    manifest.json           format version, step, a SHA-256 and size of every file above, and
                            last a SHA-256 of itself (of every byte before that key)
"""

from gradstep.checkpoint.files import CheckpointError, SaveError, verify
from gradstep.checkpoint.load import Checkpoint, load_model, open_checkpoint, resolve

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "SaveError",
    "load_model",
    "open_checkpoint",
    "resolve",
    "verify",
]
