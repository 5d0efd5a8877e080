"""What every config section shares: the base model (no unknown keys, no NaN / infinity)
and the limits and names the sections check against."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
LOSSES = ("cross_entropy", "mse", "l1", "bce_with_logits")
# The learning rate each optimizer gets when none is given (PyTorch's own defaults, and 0.01 for
# SGD, the value every tutorial starts from). The resolved config writes the value out.
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-2}


MAX_RUN_NAME = 200
"""The longest run name, in UTF-8 bytes: file systems allow 255 a path component, and a taken
name grows a ``-2``, ``-3``, ... suffix (not counted: a resumed run's config holds the name its
directory really has)."""
MAX_SEED = 2**63
"""Seeds are ``0 <= seed < 2**63``: TOML's non-negative integers, so the resolved config reads
back, and within what ``torch.manual_seed`` takes (NumPy is seeded with ``seed % 2**32``)."""
MAX_SAMPLES = 100_000_000
"""The most samples a generated source (random, circles, moons) makes: 10⁸ samples of 10 float32
features is 4 GB already; a larger ``n`` is a typo, not an experiment."""
MAX_RANDOM_NUMBERS = 1_000_000_000
"""The most numbers (``n × features``) the random source makes: 4 GB of float32."""


class _Section(BaseModel):
    # allow_inf_nan=False: pydantic lets ``inf`` through Field(ge=0) and NaN through a plain
    # float; no gradstep key means anything by them (unset is how a key says "no limit").
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
