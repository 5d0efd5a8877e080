"""One callback per file; :class:`Callback` is the base class users subclass."""

from gradstep.callbacks.base import Callback, CallbackList
from gradstep.callbacks.checkpoint import Checkpointer
from gradstep.callbacks.metrics_logger import MetricsLogger
from gradstep.callbacks.progress_bar import ProgressBar

__all__ = ["Callback", "CallbackList", "Checkpointer", "MetricsLogger", "ProgressBar"]
