"""One callback per file; :class:`Callback` is the base class users subclass."""

from gradstep.callbacks.base import Callback, CallbackList
from gradstep.callbacks.checkpoint import Checkpointer
from gradstep.callbacks.early_stopping import EarlyStopping
from gradstep.callbacks.grad_norm import GradMonitor, GradNormPeak, settled_after_peak
from gradstep.callbacks.lr_scheduler import LRScheduler
from gradstep.callbacks.metrics_logger import MetricsLogger
from gradstep.callbacks.progress_bar import ProgressBar

__all__ = [
    "Callback",
    "CallbackList",
    "Checkpointer",
    "EarlyStopping",
    "GradMonitor",
    "GradNormPeak",
    "LRScheduler",
    "MetricsLogger",
    "ProgressBar",
    "settled_after_peak",
]
