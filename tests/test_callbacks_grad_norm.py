"""The gradient monitor: the logged norm is clip_grad_norm_'s, clipping, health verdicts, and
the grad_norm_peak checkpoint policy."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import gradstep as gs
from gradstep.callbacks.grad_norm import GradMonitor, settled_after_peak
from gradstep.state import TrainState


def _with_grads(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    model(torch.randn(9, 5)).pow(2).sum().backward()
    return model


def _state() -> TrainState:
    return TrainState(epochs=1, batches_per_epoch=10)


def test_the_logged_norm_is_the_global_l2_norm_before_clipping():
    model = _with_grads()
    expected = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
    mon = GradMonitor(model, clip_norm=0.1, warn=lambda m: None)
    state = _state()
    assert mon.before_step(state, [])
    mon.flush(state)
    assert mon.last == pytest.approx(expected, rel=1e-6)
    clipped = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
    assert clipped == pytest.approx(0.1, rel=1e-4)  # clipped after measuring


def test_clip_value_clamps_each_element():
    model = _with_grads()
    GradMonitor(model, clip_value=0.01, warn=lambda m: None).before_step(_state(), [])
    assert max(p.grad.abs().max().item() for p in model.parameters()) <= 0.01


def test_no_host_sync_until_flush():
    model = _with_grads()
    mon = GradMonitor(model, warn=lambda m: None)
    for _ in range(5):
        mon.before_step(_state(), [])
    assert mon.last is None and len(mon._pending) == 5  # nothing read yet
    mon.flush(_state())
    assert mon.last is not None and not mon._pending


def _judge(series, **kw):
    warnings: list[str] = []
    mon = GradMonitor(_with_grads(), warn=warnings.append, **kw)
    state = _state()
    for step, norm in enumerate(series, start=1):
        mon._judge(step, norm, state)
    return mon, warnings


def test_sustained_tenfold_growth_of_the_median_is_exploding_from_its_first_step():
    series = [1.0] * 30 + [2.0, 3.0, 11.0] + [15.0 + i for i in range(20)]
    mon, warnings = _judge(series, window=10)
    assert mon.exploding["step"] == 33  # the first norm above 10x the earlier median
    assert mon.vanishing is None
    assert len(warnings) == 1 and "exploding gradients from step 33" in warnings[0]


def test_one_noisy_batch_is_not_exploding():
    mon, warnings = _judge([1.0] * 30 + [50.0] + [1.0] * 30, window=10)
    assert mon.exploding is None and not warnings


def test_an_absolute_threshold_is_exploding_too():
    mon, _ = _judge([1.0, 2.0, 6.0], explode_norm=5.0)
    assert mon.exploding["step"] == 3


def test_a_norm_below_the_threshold_for_a_window_is_vanishing_from_its_first_step():
    mon, warnings = _judge([1.0] * 5 + [1e-9] * 3 + [1.0] + [1e-9] * 20, window=10)
    assert mon.vanishing["step"] == 10
    assert len(warnings) == 1 and "vanishing gradients from step 10" in warnings[0]
    assert mon.exploding is None


def test_a_steady_run_has_no_verdict():
    mon, warnings = _judge([1.0 + 0.01 * (i % 3) for i in range(200)])
    assert mon.exploding is None and mon.vanishing is None and not warnings


def _one_epoch(runs, **kw):
    """64 random samples, batch 16, a step line every 2 steps."""
    settings = dict(
        source="random",
        n=64,
        val_split=0.0,
        epochs=1,
        batch_size=16,
        log_every=2,
        run_dir=str(runs),
        progress=False,
        checkpoint_every="never",
    )
    return gs.Trainer(**{**settings, **kw}).fit()


def test_step_lines_carry_grad_norm_and_per_layer_norms(runs):
    r = _one_epoch(runs, grad_norm_per_layer=True, model="mlp", model_args={"hidden": [8]})
    lines = [json.loads(s) for s in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in lines if s["kind"] == "step"]
    assert len(steps) == 2
    assert all(s["grad_norm"] > 0 for s in steps)
    layer_keys = sorted(k for k in steps[0] if k.startswith("grad_norm/"))
    assert layer_keys == sorted(f"grad_norm/{n}" for n, _ in r.model.named_parameters())
    total = sum(steps[0][k] ** 2 for k in layer_keys) ** 0.5
    assert total == pytest.approx(steps[0]["grad_norm"], rel=1e-6)
    epoch = r.history[0]
    assert epoch["grad_norm_max"] >= epoch["grad_norm"] > 0


def test_grad_norm_off_logs_none(runs):
    r = _one_epoch(runs, grad_norm=False)
    assert "grad_norm" not in r.history[0]


# --- grad_norm_peak -----------------------------------------------------------------------


def test_settled_after_peak_picks_the_first_point_of_a_settled_window_after_the_peak():
    norms = [1.0, 3.0, 8.0, 6.0, 4.0, 4.05, 4.02, 4.01, 4.0, 3.99, 4.0]
    losses = [2.3, 2.0, 1.5, 1.2, 1.0, 0.9, 0.85, 0.8, 0.8, 0.8, 0.8]
    assert settled_after_peak(norms, losses, window=5) == 8  # norms[4:9] spread 1.25 %
    assert settled_after_peak(norms, losses, window=3) == 6  # norms[4:7]
    assert settled_after_peak(norms, losses, window=5, fluctuation=0.005) is None


def test_settled_after_peak_needs_the_loss_down():
    norms = [5.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    assert settled_after_peak(norms, [1.0] * 7, window=3) is None  # no learning
    assert settled_after_peak(norms, [1.0] * 4 + [0.9] * 3, window=3) == 4


def test_a_new_peak_resets_the_rule():
    norms = [2.0, 1.0, 1.0, 1.0, 9.0, 1.0, 1.0, 1.0]
    losses = [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    assert settled_after_peak(norms, losses, window=3) == 7


def test_grad_norm_peak_policy_marks_the_first_checkpoint_after_the_rule_held(runs):
    r = gs.Trainer(
        source="circles",
        n=600,
        epochs=12,
        batch_size=16,
        optimizer="sgd",
        lr=0.2,
        momentum=0.9,
        log_every=5,
        checkpoint_every=10,
        checkpoint_keep=2,
        checkpoint_policy="grad_norm_peak",
        peak_window=4,
        peak_fluctuation=0.5,
        model="mlp",
        model_args={"hidden": [32]},
        run_dir=str(runs),
        progress=False,
    ).fit()
    lines = [json.loads(s) for s in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in lines if s["kind"] == "step"]
    i = settled_after_peak(
        [s["grad_norm"] for s in steps], [s["loss"] for s in steps], 4, 0.5, 0.95
    )
    assert i is not None, "the recorded series must reach the rule for this test to mean much"
    expected = -(-steps[i]["step"] // 10) * 10  # first checkpoint at or after that step
    best = r.summary["best"]
    assert best["monitor"] == "grad_norm_peak"
    assert best["step"] == expected
    assert (r.run_dir / "checkpoints" / "best").resolve().name == f"step-{expected:06d}"
    assert best["value"] == pytest.approx(steps[i]["grad_norm"])


def test_grad_norm_peak_needs_the_norm():
    with pytest.raises(gs.UserError, match="grad_norm_peak"):
        gs.Trainer(
            source="random", n=32, epochs=1, grad_norm=False, checkpoint_policy="grad_norm_peak"
        ).fit()


def test_tiny_late_norms_returning_to_ordinary_are_not_exploding():
    # large early norms, a near-converged stretch of tiny ones, then ordinary ones again
    series = [5.0] * 40 + [0.003] * 40 + [0.1] * 40
    mon, warnings = _judge(series, window=20)
    assert mon.exploding is None and not warnings


def test_the_incremental_policy_agrees_with_the_rule_on_random_series():
    import random

    from gradstep.callbacks.grad_norm import GradNormPeak

    rng = random.Random(0)
    reached = 0
    for _ in range(300):
        n = rng.randint(3, 40)
        norms = [rng.choice([rng.uniform(0.5, 3.0), 2.0, 2.01, float("nan")]) for _ in range(n)]
        losses = [2.0 - 1.5 * i / n for i in range(n)]
        window = rng.randint(2, 5)
        expected = settled_after_peak(norms, losses, window, 0.03, 0.95)
        peak = GradNormPeak(window, 0.03, 0.95)
        for i, (norm, loss) in enumerate(zip(norms, losses, strict=True)):
            peak.observe(10 * (i + 1), norm, loss)
        assert peak.reached_step == (None if expected is None else 10 * (expected + 1))
        reached += expected is not None
    assert reached > 20  # the series reach the rule often enough to mean something


def test_the_monitors_state_round_trips_packed_and_reads_the_old_list_form():
    """state_dict packs the recent (step, norm) window (exact, NaN and Inf included); a
    checkpoint written before that holds a list of pairs, and must still load."""
    model = nn.Linear(2, 1)
    mon = GradMonitor(model, warn=lambda m: None, window=3)
    mon.recent.extend([(7, 0.1 + 0.2), (8, float("nan")), (9, float("inf")), (10, 1e-300)])
    state = json.loads(json.dumps(mon.state_dict()))
    again = GradMonitor(model, warn=lambda m: None, window=3)
    again.load_state_dict(state)
    assert [s for s, _ in again.recent] == [7, 8, 9, 10]
    norms = [n for _, n in again.recent]
    assert norms[0] == 0.1 + 0.2 and math.isnan(norms[1]) and norms[2:] == [float("inf"), 1e-300]
    old = dict(state, recent=[[7, 0.5], [8, 0.25]])
    again.load_state_dict(old)
    assert list(again.recent) == [(7, 0.5), (8, 0.25)]
