"""The newcomer's path: train, load the model in Python, call it on raw data — and get the
accuracy validation reported.

    python examples/load_and_predict.py breast_cancer
    python examples/load_and_predict.py mnist ../shared/data/mnist

``breast_cancer``: scikit-learn's table written as two CSV files with a header (features by
name, a ``target`` column), as a user's own data comes; trained with ``[data] path`` /
``val_path``. ``mnist``: the IDX digits as uint8 arrays, the first 8,000 to train, the last
2,000 to validate. Either way the model is then loaded with ``gs.load_model`` and called on the
validation rows exactly as read from the file: no normalisation, no reshaping, no ``/ 255`` by
hand — the loaded model applies what training applied. For MNIST it is called on the uint8
pixels and on the usual float ``x / 255`` too; all give validation's accuracy. The script
prints the accuracies and exits 1 when they differ.
"""

from __future__ import annotations

import csv
import gzip
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import gradstep as gs


def write_csv(path: Path, names: list[str], x: np.ndarray, y: np.ndarray) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*names, "target"])
        out.writerows([*map(float, row), int(t)] for row, t in zip(x, y, strict=True))


def read_csv(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The features as the file holds them, and the targets: what a user would read."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    y = torch.tensor([int(r.pop("target")) for r in rows])
    return torch.tensor([[float(v) for v in r.values()] for r in rows]), y


def breast_cancer(runs: Path) -> list[tuple[str, float]]:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    order = np.random.default_rng(0).permutation(len(bunch.target))
    train, val = order[:455], order[455:]
    names = [str(n) for n in bunch.feature_names]
    write_csv(runs / "train.csv", names, bunch.data[train], bunch.target[train])
    write_csv(runs / "val.csv", names, bunch.data[val], bunch.target[val])
    trainer = gs.Trainer(
        run_dir=str(runs),
        name="cancer",
        data_path=str(runs / "train.csv"),
        val_path=str(runs / "val.csv"),
        target="target",
        model="mlp",
        model_args={"hidden": [32]},
        optimizer="adam",
        lr=0.01,
        epochs=20,
        batch_size=32,
        progress=False,
    )
    result = trainer.fit()
    model = gs.load_model(result.run_dir / "checkpoints" / "latest")  # normalisation inside
    x, y = read_csv(runs / "val.csv")
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    return [("validation", result.history[-1]["val_acc"]), ("load_model(raw rows)", acc)]


def read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset).copy()


def mnist(runs: Path, folder: Path) -> list[tuple[str, float]]:
    images = read_idx(folder / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    np.savez(runs / "train.npz", X=images[:8000], y=labels[:8000])
    np.savez(runs / "val.npz", X=images[8000:], y=labels[8000:])
    trainer = gs.Trainer(
        run_dir=str(runs),
        name="mnist",
        data_path=str(runs / "train.npz"),
        val_path=str(runs / "val.npz"),
        model="mlp",
        model_args={"hidden": [128]},
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        epochs=2,
        batch_size=64,
        progress=False,
    )
    result = trainer.fit()
    model = gs.load_model(result.run_dir / "checkpoints" / "latest")
    pixels = torch.from_numpy(images[8000:])  # (2000, 28, 28) uint8, as the file holds them
    y = torch.from_numpy(labels[8000:])
    with torch.no_grad():
        acc_uint8 = (model(pixels).argmax(1) == y).float().mean().item()
        acc_unit = (model(pixels.float() / 255).argmax(1) == y).float().mean().item()
    return [
        ("validation", result.history[-1]["val_acc"]),
        ("load_model(uint8 pixels)", acc_uint8),
        ("load_model(x / 255)", acc_unit),
    ]


def main(argv: list[str]) -> int:
    if (
        not argv
        or argv[0] not in ("breast_cancer", "mnist")
        or (argv[0] == "mnist") != (len(argv) == 2)
    ):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        results = breast_cancer(runs) if argv[0] == "breast_cancer" else mnist(runs, Path(argv[1]))
    for what, acc in results:
        print(f"{what:>26}: {acc:.2%}")
    same = all(abs(acc - results[0][1]) < 1e-6 for _, acc in results)  # float32 means
    print("the same accuracy" if same else "accuracies differ")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
