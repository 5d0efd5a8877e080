"""Tensors to safetensors bytes on the training thread (checkpoint/encoding.py)."""

from __future__ import annotations

import torch
from safetensors.torch import load
from torch import nn

from gradstep.checkpoint.encoding import encode_tensors


def test_the_encoding_round_trips_every_dtype_layout_and_alignment():
    """encode_tensors copies runs of same-dtype tensors straight into the file's bytes, as
    bytes where a run is not aligned for its dtype; the safetensors library must read back
    exactly what went in: non-contiguous (transposed, strided, expanded), 0-d, empty,
    Parameters, mixed widths."""
    g = torch.Generator().manual_seed(1)
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.bool]
    for trial in range(100):
        tensors = {}
        for i in range(int(torch.randint(1, 7, (), generator=g))):
            dtype = dtypes[int(torch.randint(0, len(dtypes), (), generator=g))]
            shape = [int(torch.randint(0, 4, (), generator=g)) for _ in range(trial % 3)]
            t = (torch.randn(shape, generator=g) * 100).to(dtype)
            if t.dim() == 2:
                t = t.t()  # not contiguous
            elif t.dim() == 1 and i % 3 == 1:
                t = torch.cat([t, t])[::2]  # strided, 1-D
            elif t.dim() == 1 and i % 3 == 2 and t.numel():
                t = t[:1].expand(t.numel())  # stride 0
            tensors[f"t{i}"] = nn.Parameter(t) if t.is_floating_point() and i % 2 else t
        data, runs, on_cpu = encode_tensors(tensors)
        assert on_cpu
        back = load(bytes(data))
        assert set(back) == set(tensors)
        for name, t in tensors.items():
            assert back[name].dtype == t.dtype and torch.equal(back[name], t.detach()), trial
        # the same layout again (looked up, not worked out): the new values are written
        changed = {
            name: torch.ones_like(t) if t.dtype == torch.bool else t.detach() * 2 + 1
            for name, t in tensors.items()
        }
        again = load(bytes(encode_tensors(changed).data))
        assert all(torch.equal(again[name], t) for name, t in changed.items()), trial
        assert sum(v.numel() * v.element_size() for _, v in runs) == sum(
            t.numel() * t.element_size() for t in tensors.values()
        )
        for dtype, view in runs:  # a view of the run's own dtype, or of its bytes
            assert view.dtype in (dtype, torch.uint8)
            assert view.data_ptr() % view.element_size() == 0
