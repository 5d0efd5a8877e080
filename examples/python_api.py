"""The Python API on in-memory tensors: the tutorial's loop in three lines.

python examples/python_api.py
"""

import tempfile

import torch
from torch import nn

import gradstep as gs

torch.manual_seed(0)
X = torch.randn(2000, 10)
y = (X[:, 0] + X[:, 1] ** 2 > 1).long()  # a learnable rule
model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))

with tempfile.TemporaryDirectory() as runs:
    trainer = gs.Trainer(
        epochs=10, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, run_dir=runs, log_every=10
    )
    result = trainer.fit(model, train=(X, y))  # 20 % is held out for validation
    print("final validation accuracy:", round(result.history[-1]["val_acc"], 4))
    print("predicted classes:", trainer.predict(X[:8]).argmax(1).tolist())
