"""gradstep: the PyTorch training loop every tutorial teaches, done right, fast, and shown.

Example::

    import gradstep as gs
    trainer = gs.Trainer(epochs=10, batch_size=64, optimizer="sgd", lr=0.01, momentum=0.9)
    result = trainer.fit(model, train=(X, y), val=(Xv, yv))
    result.history[-1]          # {"epoch": 10, "train_loss": ..., "val_acc": ..., ...}
    trainer.predict(X_new).argmax(1)
    result.predictor(X_new).argmax(1)   # the network behind training's preprocessing: the same
    predictor = gs.load_model("runs/x/checkpoints/best")   # rebuilt from saved args; no pickle
    predictor(X_raw).argmax(1)          # raw input, prepared as training did (= gradstep predict)
"""

from gradstep.callbacks import Callback
from gradstep.checkpoint import CheckpointError, SaveError, load_model
from gradstep.config import Config, load_config
from gradstep.errors import NonFiniteError, UserError
from gradstep.models.instance import save_init_args
from gradstep.predictor import Predictor
from gradstep.state import TrainState
from gradstep.summary import __version__
from gradstep.trainer import FitResult, Trainer

__all__ = [
    "Callback",
    "CheckpointError",
    "Config",
    "FitResult",
    "NonFiniteError",
    "Predictor",
    "SaveError",
    "TrainState",
    "Trainer",
    "UserError",
    "__version__",
    "load_config",
    "load_model",
    "save_init_args",
]
