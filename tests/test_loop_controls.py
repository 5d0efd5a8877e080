"""Exact gradient accumulation, the out-of-memory fallback, and non-finite steps."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import gradstep as gs
from gradstep.checkpoint import open_checkpoint


def _data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def _fit(runs, model=None, data=None, **kw):
    settings = dict(
        epochs=4,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        val_split=0.0,
        normalize=False,
        progress=False,
        run_dir=str(runs),
        checkpoint_every="never",
    )
    settings.update(kw)
    return gs.Trainer(**settings).fit(model or _model(), train=data or _data(103))


@pytest.mark.parametrize(("b", "k", "n"), [(8, 4, 103), (5, 3, 97), (16, 2, 50), (7, 5, 36)])
def test_accumulation_equals_the_big_batch_over_several_epochs(runs, b, k, n):
    data = _data(n)
    big = _fit(runs, data=data, batch_size=b * k)
    acc = _fit(runs, data=data, batch_size=b, accumulate=k)
    assert n % (b * k), "the trailing partial group must be exercised"
    for a, c in zip(big.model.parameters(), acc.model.parameters(), strict=True):
        assert (a - c).abs().max() <= 1e-5
    assert big.summary["global_step"] == acc.summary["global_step"] == 4 * -(-n // (b * k))
    for hb, ha in zip(big.history, acc.history, strict=True):  # the true mean over samples
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-5)


def test_effective_batch_derives_accumulate_and_reports_it(runs, capsys):
    r = _fit(runs, batch_size=8, effective_batch=32)
    assert r.config.train.accumulate == 4
    assert r.summary["data"]["effective_batch"] == 32
    assert "batch 8 × accumulate 4" in capsys.readouterr().out


def test_effective_batch_must_be_a_multiple_of_batch_size():
    with pytest.raises(gs.UserError, match="effective_batch = 30 is not a multiple"):
        gs.Trainer(batch_size=8, effective_batch=30)


def test_accumulation_with_batchnorm_warns_once(runs, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    _fit(runs, model=model, batch_size=8, accumulate=2, epochs=1)
    err = capsys.readouterr().err
    assert err.count("gradient accumulation with BatchNorm") == 1


class OOMAbove(nn.Module):
    """Raises CUDA's out-of-memory error (on the CPU) for batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
        self.limit = limit

    def forward(self, x):
        if self.training and len(x) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_out_of_memory_fallback_keeps_the_effective_batch_and_the_result(runs, capsys):
    data = _data(103)
    clean = _fit(runs, model=OOMAbove(10_000), data=data, batch_size=32)
    fell = _fit(runs, model=OOMAbove(10), data=data, batch_size=32, on_oom="fallback")
    for a, c in zip(clean.model.parameters(), fell.model.parameters(), strict=True):
        assert (a - c).abs().max() <= 1e-5
    assert fell.summary["global_step"] == clean.summary["global_step"]
    events = fell.summary["health"]["out_of_memory"]
    assert [(e["step"], e["micro_batch"], e["accumulate"]) for e in events] == [
        (1, 16, 2),
        (1, 8, 4),
    ]
    assert fell.summary["data"]["effective_batch"] == 32
    assert "out of memory at step 1: micro-batch now 8 samples" in capsys.readouterr().err


def test_out_of_memory_without_fallback_is_raised(runs):
    with pytest.raises(torch.OutOfMemoryError):
        _fit(runs, model=OOMAbove(10), batch_size=32)


class PoisonAt(nn.Module):
    """Outputs NaN in the forward passes of training step ``step`` (batch 16, no accumulation)."""

    def __init__(self, step: int) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
        self.step, self.calls = step, 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls == self.step:  # (the shape probe runs in eval mode)
                out = out * float("nan")
        return out


class Weights(gs.Callback):
    def __init__(self) -> None:
        self.after: dict[int, list[torch.Tensor]] = {}

    def on_step_end(self, state):
        self.after[state.global_step] = [p.detach().clone() for p in state.model.parameters()]


def test_skip_leaves_the_weights_bit_identical_and_counts_the_step(runs):
    seen = Weights()
    r = gs.Trainer(
        epochs=2,
        batch_size=16,
        optimizer="adam",
        val_split=0.0,
        normalize=False,
        progress=False,
        run_dir=str(runs),
        on_nonfinite="skip",
        callbacks=[seen],
    ).fit(PoisonAt(5), train=_data(103))
    for a, b in zip(seen.after[4], seen.after[5], strict=True):
        assert torch.equal(a, b)  # step 5 was skipped: nothing moved
    assert any(not torch.equal(a, b) for a, b in zip(seen.after[5], seen.after[6], strict=True))
    assert r.summary["health"]["skipped_steps"] == 1
    assert r.summary["health"]["first_skipped"] == [5]
    assert all(torch.isfinite(p).all() for p in r.model.parameters())
    assert all(h["train_loss"] == h["train_loss"] for h in r.history)  # no NaN in the metrics


def _sgd_16(runs, **kw) -> gs.Trainer:
    """Batch 16 of the 103 samples, SGD, checkpoints every 2 steps."""
    settings = dict(
        epochs=3,
        batch_size=16,
        optimizer="sgd",
        val_split=0.0,
        normalize=False,
        progress=False,
        run_dir=str(runs),
        checkpoint_every=2,
    )
    return gs.Trainer(**{**settings, **kw})


def test_fail_stops_naming_the_step_and_writes_no_nonfinite_checkpoint(runs):
    trainer = _sgd_16(runs, log_every=3)
    with pytest.raises(gs.NonFiniteError, match="non-finite gradient at step 5"):
        trainer.fit(PoisonAt(5), train=_data(103))
    run = next(runs.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["health"]["nonfinite_step"] == 5
    assert summary["stop_reason"] == "non-finite gradient at step 5"
    saved = sorted((run / "checkpoints").glob("step-*"))
    assert [p.name for p in saved] == ["step-000002", "step-000004"]  # none from step 5 on
    for p in saved:
        assert all(torch.isfinite(t).all() for t in open_checkpoint(p).model_tensors().values())


def test_the_command_line_reports_a_nonfinite_run_in_one_line(tmp_path, capsys):
    from gradstep.cli import main

    cfg = tmp_path / "nan.toml"
    cfg.write_text(
        '[data]\nsource = "random"\nn = 64\n[optim]\nname = "sgd"\nlr = 1e30\n'
        f'[run]\ndir = "{tmp_path / "runs"}"\n[train]\nepochs = 3\nprogress = false\n'
    )
    assert main(["fit", str(cfg)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite" in err[0] and "Traceback" not in err[0]


def test_after_a_fallback_short_batches_are_cut_into_fewer_pieces_never_empty(runs):
    # 130 samples, batch 32: the last micro-batch has 2; micro-batches end up as pieces of 8
    data = _data(130)
    clean = _fit(runs, model=OOMAbove(10_000), data=data, batch_size=32, epochs=2)
    fell = _fit(runs, model=OOMAbove(8), data=data, batch_size=32, on_oom="fallback", epochs=2)
    assert all(h["train_loss"] == h["train_loss"] for h in fell.history)  # no NaN from a piece
    assert fell.summary["health"]["skipped_steps"] == 0
    for a, c in zip(clean.model.parameters(), fell.model.parameters(), strict=True):
        assert (a - c).abs().max() <= 1e-5


def test_a_nonfinite_step_near_max_steps_still_fails_naming_it(runs):
    trainer = _sgd_16(runs, max_steps=6, log_every=100)
    with pytest.raises(gs.NonFiniteError, match="non-finite gradient at step 4"):
        trainer.fit(PoisonAt(4), train=_data(103))
    run = next(runs.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop_reason"] == "non-finite gradient at step 4"
    assert [p.name for p in sorted((run / "checkpoints").glob("step-*"))] == ["step-000002"]


def test_effective_batch_never_exceeds_the_epoch(runs):
    r = _fit(runs, batch_size="full", accumulate=2, epochs=1)
    assert r.summary["data"]["effective_batch"] == 103


def test_out_of_memory_on_the_command_line_is_one_line(tmp_path, capsys, monkeypatch):
    from gradstep import cli

    def oom(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setitem(cli.COMMANDS, "fit", oom)
    assert cli.main(["fit"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "on_oom" in err[0] and "out of memory" in err[0]


def test_a_snapshot_refuses_nan_anywhere_and_inf_outside_buffers():
    from gradstep.checkpoint.snapshot import refuse_nonfinite

    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    weights = model.state_dict()
    weights["1.running_mean"] = torch.tensor([0.0, -float("inf")])  # a mask-like buffer: fine
    refuse_nonfinite(model, weights, {}, 3)
    for name, bad in (("0.weight", float("inf")), ("1.running_var", float("nan"))):
        broken = dict(weights)
        broken[name] = weights[name].clone().fill_(bad)
        with pytest.raises(gs.NonFiniteError, match=f"step 3: weight {name} is not finite"):
            refuse_nonfinite(model, broken, {}, 3)
    with pytest.raises(gs.NonFiniteError, match="optimizer state 0.exp_avg"):
        refuse_nonfinite(model, weights, {"0.exp_avg": torch.tensor([1.0, float("nan")])}, 3)


def test_the_fast_finiteness_check_agrees_with_the_per_tensor_one():
    """all_finite reads runs of same-dtype tensors from the encoded bytes; it must never call a
    tensor with NaN or Inf finite, nor read integers as floats."""
    from gradstep.checkpoint.encoding import encode_tensors
    from gradstep.checkpoint.snapshot import all_finite

    g = torch.Generator().manual_seed(0)
    dtypes = [torch.float32, torch.float32, torch.float64, torch.int64, torch.float16]
    for trial in range(200):
        tensors = {}
        for i in range(int(torch.randint(1, 6, (), generator=g))):
            dtype = dtypes[int(torch.randint(0, len(dtypes), (), generator=g))]
            n = int(torch.randint(0, 7, (), generator=g))
            if dtype == torch.int64:  # bit patterns that would be NaN if read as float32
                tensors[f"t{i}"] = torch.full((n,), 0x7FC000007FC00000, dtype=dtype)
            else:
                tensors[f"t{i}"] = torch.randn(n, generator=g).to(dtype)
        floats = [t for t in tensors.values() if t.is_floating_point() and t.numel()]
        if floats and trial % 2:
            bad = floats[int(torch.randint(0, len(floats), (), generator=g))]
            bad[int(torch.randint(0, bad.numel(), (), generator=g))] = (
                float("nan") if trial % 4 == 1 else -float("inf")
            )
        finite = all(bool(torch.isfinite(t).all()) for t in floats)
        fast = all_finite(encode_tensors(tensors)[1])
        assert fast == finite or (finite and not fast), (trial, tensors)  # False = look closer
        if finite and all(t.dtype == torch.float32 for t in floats):
            assert fast  # the common case never falls back
