"""MNIST from IDX files: both layouts, md5 checks, and downloads from a loopback server."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading

import numpy as np
import pytest
import torch

from gradstep.data import mnist
from gradstep.data.idx import read_idx
from gradstep.errors import UserError

FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def test_reads_the_shared_test_split_from_a_flat_folder(mnist_dir):
    x, y, split = mnist.load_mnist(mnist_dir, download_missing=False)
    assert split == "test"
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert 0.0 == float(x.min()) and float(x.max()) == 1.0
    assert y.shape == (10_000,) and y.dtype == torch.int64
    assert torch.bincount(y).tolist()[:3] == [980, 1135, 1032]  # the official test split


def test_reads_torchvisions_raw_layout_and_plain_files(mnist_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:  # torchvision keeps the decompressed files too; use those alone
        (raw / name.removesuffix(".gz")).write_bytes(
            gzip.decompress((mnist_dir / name).read_bytes())
        )
    x, y, _ = mnist.load_mnist(tmp_path, download_missing=False)
    x0, y0, _ = mnist.load_mnist(mnist_dir, download_missing=False)
    assert torch.equal(x, x0) and torch.equal(y, y0)


def test_a_corrupt_gzip_file_fails_its_md5(mnist_dir, tmp_path):
    for name in FILES:
        shutil.copy(mnist_dir / name, tmp_path / name)
    data = bytearray((tmp_path / FILES[1]).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / FILES[1]).write_bytes(bytes(data))
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz: md5 mismatch"):
        mnist.load_mnist(tmp_path, download_missing=False)


def test_idx_reader_checks_header_and_size(tmp_path):
    good = tmp_path / "a.idx"
    good.write_bytes(
        b"\x00\x00\x08\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6))
    )
    assert read_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    (tmp_path / "short.idx").write_bytes(good.read_bytes()[:-1])
    with pytest.raises(UserError, match="short.idx: IDX data is 5 bytes, its header"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "bad.idx").write_bytes(b"PK\x03\x04....")
    with pytest.raises(UserError, match="bad.idx: not an IDX file"):
        read_idx(tmp_path / "bad.idx")


@pytest.fixture
def mirror(mnist_dir, tmp_path):
    """A loopback HTTP server that serves the shared files under the training split's names,
    with the md5 table adjusted to match (the download path is what is under test)."""
    served = tmp_path / "served"
    served.mkdir()
    for split_file in FILES:
        train_name = split_file.replace("t10k", "train")
        shutil.copy(mnist_dir / split_file, served / train_name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()
    server.server_close()


def test_downloads_from_a_mirror_verifying_md5(mirror, monkeypatch, tmp_path):
    url, served = mirror
    md5 = {
        n: mnist.md5sum(served / n)
        for n in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    }
    monkeypatch.setattr(mnist, "MD5", {**mnist.MD5, **md5})
    dead = "http://127.0.0.1:9/"  # nothing listens on the discard port: the next mirror is tried
    monkeypatch.setattr(mnist, "MIRRORS", [dead, url])
    root = tmp_path / "mnist"
    x, _y, split = mnist.load_mnist(root)
    assert split == "train" and x.shape == (10_000, 1, 28, 28)
    assert sorted(p.name for p in root.iterdir()) == sorted(md5)  # no .part files left


def test_a_download_with_the_wrong_md5_is_not_kept(mirror, monkeypatch, tmp_path):
    url, _ = mirror
    monkeypatch.setattr(mnist, "MIRRORS", [url])  # the real md5 table: the bytes do not match
    root = tmp_path / "mnist"
    with pytest.raises(UserError, match="md5 mismatch"):
        mnist.load_mnist(root)
    assert not root.exists()  # no partial file, and not the folder made for it


def test_offline_says_so_and_names_the_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(mnist, "MIRRORS", ["http://127.0.0.1:9/"])
    with pytest.raises(
        UserError, match=r"MNIST not found in .*mnist and the download failed \(offline\?\)"
    ):
        mnist.load_mnist(tmp_path / "data" / "mnist")
    assert list(tmp_path.iterdir()) == []  # the folders made for the download are gone


def test_labels_dtype(mnist_dir):
    labels = read_idx(mnist_dir / FILES[1])
    assert labels.dtype == np.uint8 and labels.shape == (10_000,)
