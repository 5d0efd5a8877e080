"""Learning-rate schedules: the closed forms equal PyTorch's schedulers; the trainer drives them
per step or per epoch, logs lr, and resumes them."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

import gradstep as gs
from gradstep.config import ScheduleSection
from gradstep.optim import LRSchedule


def _opt(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def _ours(cfg: ScheduleSection, n: int, total: int = 20) -> list[float]:
    opt = _opt()
    sched = LRSchedule(cfg, opt, total)
    sched.apply()
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(n - 1):
        sched.advance()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def _torch(make, n: int) -> list[float]:
    opt = _opt()
    sched = make(opt)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(n - 1):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


S = torch.optim.lr_scheduler


@pytest.mark.parametrize(
    ("cfg", "make", "n"),
    [
        (dict(name="step", step_size=3, gamma=0.5), lambda o: S.StepLR(o, 3, 0.5), 12),
        (
            dict(name="multistep", milestones=[2, 5], gamma=0.1),
            lambda o: S.MultiStepLR(o, [2, 5], 0.1),
            9,
        ),
        (dict(name="exponential", gamma=0.9), lambda o: S.ExponentialLR(o, 0.9), 10),
        (
            dict(name="cosine", t_max=10, eta_min=0.001),
            lambda o: S.CosineAnnealingLR(o, 10, 0.001),
            11,
        ),
        (
            dict(name="onecycle", t_max=20, max_lr=0.5),
            lambda o: S.OneCycleLR(o, max_lr=0.5, total_steps=20, cycle_momentum=False),
            20,
        ),
    ],
)
def test_each_schedule_equals_pytorchs(cfg, make, n):
    ours, theirs = _ours(ScheduleSection(**cfg), n), _torch(make, n)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15)


def test_cosine_holds_eta_min_after_t_max():
    lrs = _ours(ScheduleSection(name="cosine", t_max=4, eta_min=0.01), 8)
    assert lrs[4:] == [0.01] * 4


def test_warmup_cosine_rises_linearly_then_falls_to_eta_min():
    lrs = _ours(ScheduleSection(name="warmup_cosine", t_max=20, warmup=4, eta_min=0.0), 21)
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])  # base 0.1 reached at t=4
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    assert lrs[20] == pytest.approx(0.0, abs=1e-15)


def test_plateau_cuts_the_rate_as_reduce_lr_on_plateau_does():
    values = [1.0, 0.9, 0.9, 0.9, 0.9, 0.95, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    cfg = ScheduleSection(name="plateau", factor=0.5, patience=2, cooldown=1, min_lr=0.02)
    opt = _opt()
    ours = LRSchedule(cfg, opt, 10)
    ref_opt = _opt()
    ref = S.ReduceLROnPlateau(ref_opt, "min", factor=0.5, patience=2, cooldown=1, min_lr=0.02)
    for v in values:
        ours.observe(v, "min")
        ref.step(v)
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
    assert ours.reductions >= 2


def _fit(**kw):
    settings = dict(
        source="random",
        n=96,
        features=4,
        classes=2,
        epochs=4,
        batch_size=16,
        progress=False,
        checkpoint_every="never",
        optimizer="sgd",
        lr=0.1,
        log_every=1,
        seed=1,
    )
    settings.update(kw)
    return gs.Trainer(**settings).fit()


def test_epoch_interval_logs_the_rate_each_epoch_used(tmp_path):
    r = _fit(schedule="step", step_size=1, gamma=0.5, run_dir=str(tmp_path))
    assert [h["lr"] for h in r.history] == pytest.approx([0.1, 0.05, 0.025, 0.0125])


def test_step_interval_counts_optimizer_steps_not_micro_batches(tmp_path):
    # 77 train samples, batch 16 -> 5 micro-batches; accumulate 2 -> 3 steps an epoch
    r = _fit(
        n=96,
        schedule="exponential",
        schedule_interval="step",
        gamma=0.5,
        accumulate=2,
        run_dir=str(tmp_path),
    )
    steps = [json.loads(line) for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [s["lr"] for s in steps if s["kind"] == "step"]
    assert len(lrs) == 12  # 3 steps x 4 epochs
    assert lrs == pytest.approx([0.1 * 0.5**i for i in range(12)])  # the rate each step used


def test_onecycle_over_the_whole_run_by_default(tmp_path):
    r = _fit(schedule="onecycle", schedule_interval="step", run_dir=str(tmp_path))
    assert r.summary["schedule"]["final_lr"] < 1e-5  # ends at max_lr / 25 / 1e4 territory
    assert max(h["lr"] for h in r.history) <= 0.1 + 1e-12


def test_plateau_without_validation_watches_train_loss(tmp_path):
    r = _fit(val_split=0.0, schedule="plateau", run_dir=str(tmp_path))
    assert r.summary["schedule"]["name"] == "plateau"


def test_a_plateau_monitor_the_run_does_not_log_is_refused(tmp_path):
    with pytest.raises(gs.UserError, match=r"\[schedule\] monitor = 'val_accuracy'"):
        _fit(schedule="plateau", schedule_monitor="val_accuracy", run_dir=str(tmp_path))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_schedule_names_are_checked():
    with pytest.raises(gs.UserError, match="schedule"):
        gs.Trainer(schedule="cosin")


def test_lr_values_are_finite_for_every_schedule(tmp_path):
    for name in ("step", "multistep", "exponential", "cosine", "warmup_cosine", "onecycle"):
        r = _fit(schedule=name, epochs=2, run_dir=str(tmp_path / name))
        assert all(math.isfinite(h["lr"]) and h["lr"] >= 0 for h in r.history), name


def test_a_schedule_that_overflows_gives_an_infinite_rate_not_an_error():
    """gamma > 1 over a long run: 0.1 * 1.5 ** 2000 overflows a float; PyTorch's scheduler
    would give inf, and so does the closed form (no OverflowError mid-training)."""
    from gradstep.config import ScheduleSection
    from gradstep.optim import LRSchedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = LRSchedule(ScheduleSection(name="exponential", gamma=1.5), opt, total=3000)
    assert sched.lr_at(2000, 0.1) == float("inf")
    assert sched.lr_at(3, 0.1) == pytest.approx(0.1 * 1.5**3)
