"""gradstep: the PyTorch training loop every tutorial teaches, done right, fast, and shown.

Example::

    import gradstep as gs
    trainer = gs.Trainer(epochs=10, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9)
    result = trainer.fit(model, train=(X, y), val=(Xv, yv))
    result.history[-1]          # {"epoch": 10, "train_loss": ..., "val_acc": ..., ...}
    trainer.predict(X_new).argmax(1)
    model = gs.load_model("runs/x/checkpoints/best")   # rebuilt from saved args; no pickle
"""

from gradstep.callbacks import Callback
from gradstep.checkpoint import CheckpointError, SaveError, load_model
from gradstep.config import Config, load_config
from gradstep.errors import NonFiniteError, UserError
from gradstep.state import TrainState
from gradstep.trainer import FitResult, Trainer, __version__

__all__ = [
    "Callback",
    "CheckpointError",
    "Config",
    "FitResult",
    "NonFiniteError",
    "SaveError",
    "TrainState",
    "Trainer",
    "UserError",
    "__version__",
    "load_config",
    "load_model",
]
