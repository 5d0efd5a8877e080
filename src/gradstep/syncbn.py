"""BatchNorm whose statistics are those of the global micro-batch: ``[train] sync_batchnorm``.

Under DDP each rank sees ``batch_size`` samples of a step's ``batch_size × world`` (see
:mod:`gradstep.data.sampler`). A plain BatchNorm normalises with its rank's statistics; a synced
one with the statistics of all ranks' samples together — what one process with the global
micro-batch computes, so a run's weights and running statistics do not depend on the world size.

On CUDA this is PyTorch's ``nn.SyncBatchNorm``. PyTorch's refuses CPU tensors ("SyncBatchNorm
expected input tensor to be on GPU"), and gradstep trains on the CPU with gloo too, so
:class:`CpuSyncBatchNorm` is written here, in a dozen lines of differentiable ops: the mean and
the variance are sums all-reduced with ``torch.distributed.nn.functional.all_reduce`` (whose
backward all-reduces the gradient, so each rank's input gets the gradient of every rank's loss
through the shared statistics, as ``nn.SyncBatchNorm``'s backward gives). Two passes (mean,
then the sum of squared deviations) rather than ``E[x²] − E[x]²``, which loses digits in
float32. Every rank takes part in both all-reduces on every training forward, an empty share of
the last block included.

Both keep the BatchNorm's parameters and buffers (:func:`synced` shares them), so checkpoints hold
the plain module's keys and load into the plain class in one process.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class CpuSyncBatchNorm(_BatchNorm):
    """A BatchNorm (any ``N, C, ...`` input) with statistics over every rank's samples."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training or not self.track_running_stats) or not _distributed():
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, input.dim())]
        count = torch.tensor(
            [input.numel() / max(input.size(1), 1)], dtype=input.dtype, device=input.device
        )
        total = all_reduce(torch.cat([input.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        shape = [1, -1] + [1] * (input.dim() - 2)
        centred = input - mean.reshape(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (n / (n - 1)) if n > 1 else var
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)  # type: ignore[union-attr]
        return out


def _distributed() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def synced(bn: _BatchNorm, device: torch.device) -> nn.Module:
    """``bn`` as a synced BatchNorm (PyTorch's on CUDA, :class:`CpuSyncBatchNorm` elsewhere)
    sharing its parameters and buffers."""
    cls = nn.SyncBatchNorm if device.type == "cuda" else CpuSyncBatchNorm
    sync = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        sync.weight, sync.bias = bn.weight, bn.bias
    sync.running_mean, sync.running_var = bn.running_mean, bn.running_var
    sync.num_batches_tracked = bn.num_batches_tracked
    sync.train(bn.training)
    return sync


def convert(net: nn.Module, device: torch.device) -> int:
    """Replace every BatchNorm of ``net`` in place (the root stays the module the run was
    given, so checkpoints and ``FitResult.model`` are it); return how many."""
    found = [
        (parent, name, m)
        for parent in net.modules()
        for name, m in parent.named_children()
        if isinstance(m, NORMS)
    ]
    for parent, name, bn in found:
        parent._modules[name] = synced(bn, device)
    return len(found)


def has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, NORMS) for m in net.modules())


__all__ = ["CpuSyncBatchNorm", "convert", "has_batchnorm", "synced"]
