"""Tensors to safetensors bytes, on the training thread, at every checkpoint.

:func:`encode_tensors` writes the safetensors format itself — an 8-byte little-endian header
length, a JSON header of dtype / shape / byte offsets padded with spaces to a multiple of 8, then
the raw little-endian data — straight from the live tensors into one ``bytearray``: that copy is
the snapshot the background writer then hashes and writes. Every file is read back through the
safetensors library, which checks it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def tensors_to_bytes(tensors: Mapping[str, torch.Tensor]) -> bytearray:
    """The safetensors encoding of ``tensors`` (from any device); the bytes are the snapshot.
    Written here rather than by ``safetensors.torch.save``, which refuses tensors that share
    storage (tied weights; here they are simply written twice) and is a few times slower on the
    training thread."""
    return encode_tensors(tensors).data


class Encoded(NamedTuple):
    """What :func:`encode_tensors` returns."""

    data: bytearray  # the safetensors file's bytes
    runs: list[tuple[torch.dtype, torch.Tensor]]  # (dtype, view over the run's bytes)
    on_cpu: bool  # every tensor was on the CPU


class _Layout(NamedTuple):
    head: bytes  # 8-byte length + JSON header, padded
    size: int  # bytes of tensor data
    runs: list[tuple[torch.dtype, int, int, list[int]]]  # dtype, byte offset, count, tensor indices
    on_cpu: bool


_LAYOUTS: dict[tuple[Any, ...], _Layout] = {}  # by names, dtypes, shapes and devices


def _layout(tensors: Mapping[str, torch.Tensor], key: tuple[Any, ...]) -> _Layout:
    header: dict[str, Any] = {}
    runs: list[tuple[torch.dtype, int, int, list[int]]] = []
    offset = 0
    for i, (name, t) in enumerate(tensors.items()):
        code = _DTYPES.get(t.dtype)
        if code is None:
            raise TypeError(f"tensor {name!r}: dtype {t.dtype} cannot be saved")
        count = t.numel()
        size = count * t.dtype.itemsize
        header[name] = {
            "dtype": code,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        if size:
            if runs and runs[-1][0] == t.dtype:
                dtype, at, n, members = runs[-1]
                runs[-1] = (dtype, at, n + count, members)
                members.append(i)
            else:
                runs.append((t.dtype, offset, count, [i]))
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    on_cpu = all(t.device.type == "cpu" for t in tensors.values())
    layout = _Layout(len(head).to_bytes(8, "little") + head, offset, runs, on_cpu)
    if len(_LAYOUTS) >= 64:  # shapes that keep changing: start over rather than grow
        _LAYOUTS.clear()
    _LAYOUTS[key] = layout
    return layout


def encode_tensors(tensors: Mapping[str, torch.Tensor]) -> Encoded:
    """:func:`tensors_to_bytes`, and ``(dtype, view)`` for each run of adjacent tensors of one
    dtype: a view over the run's encoded bytes, of that dtype where the run's offset is aligned
    for it, else of bytes (the caller can check them: ``gradstep.checkpoint.snapshot.all_finite``).

    One copy per run: a ``torch.cat`` of the tensors straight into the file's bytes, viewed as
    the run's dtype. The header and the runs depend only on the tensors' names, dtypes, shapes
    and devices, so they are worked out once for each such layout (a model saved every epoch
    has one) and looked up after that: on the training thread, every Python-level operation is
    time the step waits (about three times what it costs in a tight loop, the caches being cold
    after a training step)."""
    key = tuple((name, t.dtype, t.shape, t.device) for name, t in tensors.items())
    layout = _LAYOUTS.get(key) or _layout(tensors, key)
    base = len(layout.head)
    out = bytearray(base + layout.size)
    out[:base] = layout.head
    values = list(tensors.values())
    views = []
    with torch.no_grad():
        for dtype, at, count, members in layout.runs:
            flat = [values[i].reshape(-1) for i in members]
            if (base + at) % dtype.itemsize:  # rare (after an odd-length half-precision run)
                view = torch.frombuffer(
                    out, dtype=torch.uint8, offset=base + at, count=count * dtype.itemsize
                )
                # as bytes: a fresh copy where the stride is not 1 (a strided or expanded
                # tensor; even one element of stride 2, which PyTorch calls contiguous)
                flat = [
                    (
                        f if f.stride(0) == 1 else f.clone(memory_format=torch.contiguous_format)
                    ).view(torch.uint8)
                    for f in flat
                ]
            else:
                view = torch.frombuffer(out, dtype=dtype, offset=base + at, count=count)
            if layout.on_cpu:
                torch.cat(flat, out=view)
            else:  # from an accelerator: each tensor straight into its place
                i = 0
                for f in flat:
                    view[i : i + f.numel()].copy_(f)
                    i += f.numel()
            views.append((dtype, view))
    return Encoded(out, views, layout.on_cpu)
