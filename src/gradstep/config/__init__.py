"""Typed configuration: every key, its default, its validation, ``--set`` overrides.

One :class:`Config` describes a run. It comes from a TOML file (``gradstep fit CONFIG.toml``),
from ``--set section.key=value`` overrides, or from the flat keyword arguments of
:class:`gradstep.Trainer` (``epochs=5, lr=0.1, optimizer="sgd"``); all three meet here.

Rules a user can rely on:

* every key has a default, so an empty file (or no file) is a valid config: the built-in example;
* an unknown section or key is an error that names it and suggests the closest valid one;
* a value of the wrong type or out of range is an error naming ``[section] key``, the value and
  what was expected; no float key takes NaN or infinity (none has a meaning for them: "no limit"
  is the key left unset), and the sizes a machine could never allocate are refused up front;
* ``--set`` values are read as TOML values (``[64, 32]``, ``0.1``, ``true``), and anything that is
  not valid TOML is taken as a string, so ``--set train.batch_size=full`` works unquoted.

Example::

    cfg = load_config("examples/mnist_simplenet.toml", overrides=["train.epochs=2"])
    cfg.train.epochs  # 2
"""

from __future__ import annotations

from gradstep.config.base import (  # noqa: F401
    DEFAULT_LR,
    LOSSES,
    MAX_RANDOM_NUMBERS,
    MAX_RUN_NAME,
    MAX_SAMPLES,
    MAX_SEED,
    OPTIMIZERS,
    _Section,
)
from gradstep.config.data import (  # noqa: F401
    GENERATED_SOURCES,
    DataSection,
    _normalize_problem,
    infer_source,
)
from gradstep.config.files import (  # noqa: F401
    _format_error,
    _section_key,
    _shown,
    apply_overrides,
    config_from_flat,
    load_config,
    parse_override,
    read_toml,
    to_toml,
    validate_config,
)
from gradstep.config.sections import (  # noqa: F401
    _EXPECTED,
    _RENAMED,
    FLAT_KEYS,
    MAX_COUNT,
    PLOTS_DEFAULT,
    SECTIONS,
    CheckpointSection,
    Config,
    DistSection,
    EarlyStopSection,
    HealthSection,
    LogSection,
    ModelSection,
    OptimSection,
    RunSection,
    ScheduleSection,
    TrainSection,
    run_name_problem,
)

__all__ = [
    "DEFAULT_LR",
    "FLAT_KEYS",
    "GENERATED_SOURCES",
    "LOSSES",
    "MAX_COUNT",
    "MAX_RANDOM_NUMBERS",
    "MAX_RUN_NAME",
    "MAX_SAMPLES",
    "MAX_SEED",
    "OPTIMIZERS",
    "PLOTS_DEFAULT",
    "SECTIONS",
    "CheckpointSection",
    "Config",
    "DataSection",
    "DistSection",
    "EarlyStopSection",
    "HealthSection",
    "LogSection",
    "ModelSection",
    "OptimSection",
    "RunSection",
    "ScheduleSection",
    "TrainSection",
    "apply_overrides",
    "config_from_flat",
    "infer_source",
    "load_config",
    "parse_override",
    "read_toml",
    "run_name_problem",
    "to_toml",
    "validate_config",
]
