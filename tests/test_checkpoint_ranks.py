"""Each rank's part of a DDP checkpoint, and the effective-batch comparison of a resume
(gradstep.checkpoint.ranks); the real gathers run in tests/test_dist_resume.py."""

from __future__ import annotations

import pytest

from gradstep.checkpoint.ranks import block_of, effective_batch, own_part, reshaped, summed_meter
from gradstep.config import Config

FP = {"model": "mlp", "batch_size": 8, "accumulate": 2, "world_size": 2, "drop_last": False}


def meter(samples, total, window=None, window_n=0):
    return {"samples": samples, "total": total, "window": window, "window_n": window_n}


def test_summed_meter_adds_every_ranks_sums():
    parts = [{"meter": meter(3, [1.5, 2.0, 3.0], 0.5, 1)}, {"meter": meter(2, [1.0, 1.0, 2.0])}]
    assert summed_meter(parts) == meter(5, [2.5, 3.0, 5.0], 0.5, 1)
    assert summed_meter([{"meter": None}, {"meter": None}]) is None


def test_each_rank_takes_back_its_own_part_under_the_same_world_size():
    saved = {
        "rng": "r0",
        "meter": meter(5, [2.5, 3.0, 5.0]),
        "ranks": [
            {"rng": "r0", "meter": meter(3, [1.5, 2.0, 3.0])},
            {"rng": "r1", "meter": meter(2, [1.0, 1.0, 2.0])},
        ],
    }
    assert own_part(saved, rank=1, world=2) == (meter(2, [1.0, 1.0, 2.0]), "r1")
    # another world size: rank 0 the global sums, the others none; generators by rank
    assert own_part(saved, rank=0, world=1) == (meter(5, [2.5, 3.0, 5.0]), "r0")
    assert own_part(saved, rank=1, world=3) == (meter(0, None), "r1")
    assert own_part(saved, rank=2, world=3) == (meter(0, None), "r0")
    single = {"rng": "r0", "meter": None}  # a single-process checkpoint at an epoch's end
    assert own_part(single, rank=1, world=2) == (None, "r0")


def test_the_same_effective_batch_on_another_world_size_continues_the_run():
    one = {**FP, "accumulate": 4, "world_size": 1}
    old, new, line = reshaped(FP, one)
    assert line is None and old == new  # batch size, accumulate and world size left out
    assert effective_batch(FP) == effective_batch(one) == 32
    assert block_of(FP) != block_of(one)


def test_another_effective_batch_is_named_with_both_values():
    _, _, line = reshaped(FP, {**FP, "accumulate": 8, "world_size": 1})
    assert line == (
        "effective batch (batch_size × accumulate × processes): 32 = 8 × 2 × 2 in the "
        "checkpoint, 64 = 8 × 8 × 1 now"
    )


def test_drop_last_with_another_block_compares_batching_as_before():
    old, new, line = reshaped(
        {**FP, "drop_last": True}, {**FP, "drop_last": True, "accumulate": 4, "world_size": 1}
    )
    assert line is None and old["world_size"] == 2 and new["world_size"] == 1
    full = {**FP, "batch_size": None}  # full-batch training has no effective batch to compare
    assert reshaped(full, full)[2] is None and effective_batch(full) is None


@pytest.mark.parametrize("acc", [1, 2, 4])
def test_a_resolved_config_of_any_world_size_loads(acc):
    """A 2-process run writes accumulate = 64 / (16 × 2) = 2 beside effective_batch."""
    cfg = Config.model_validate(
        {"train": {"batch_size": 16, "effective_batch": 64, "accumulate": acc}}
    )
    assert cfg.train.accumulate == 4  # for one process: gradstep.dist derives it per world
    with pytest.raises(ValueError, match="means accumulate = 4, not 3"):
        Config.model_validate({"train": {"batch_size": 16, "effective_batch": 64, "accumulate": 3}})
