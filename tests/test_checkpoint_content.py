"""What a checkpoint stores of the run's random generators (checkpoint/content.py)."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from gradstep.checkpoint.content import RngCapture, rng_state, set_rng_state


def test_the_cached_rng_capture_always_equals_a_fresh_read():
    """RngCapture re-encodes a generator only when its state changed; whatever happens between
    two captures — draws from each generator, reseeding, a cached Gaussian drawn (NumPy's
    legacy ``normal`` keeps the second value of a pair: drawing it changes no key; set_state
    can bring it back under the same key) — its text must be exactly the one a fresh read
    gives."""
    capture = RngCapture()
    saved: list = []
    steps = [
        lambda: None,
        lambda: random.random(),
        lambda: np.random.rand(3),
        lambda: torch.rand(2),
        lambda: np.random.normal(),  # draws a pair: one cached
        lambda: None,
        lambda: np.random.normal(),  # the cached one: the key does not move
        lambda: None,
        lambda: np.random.normal(),
        lambda: np.random.seed(7),  # reseeding clears the cached Gaussian
        lambda: np.random.normal(),
        lambda: np.random.normal(),
        lambda: np.random.normal(),  # one cached again
        lambda: saved.append(np.random.get_state()),
        lambda: np.random.normal(),  # the cached one drawn: no key moves
        lambda: None,
        lambda: np.random.set_state(saved[-1]),  # the same key, the Gaussian cached again
        lambda: torch.manual_seed(3),
        lambda: random.seed(5),
        lambda: np.random.set_state(np.random.get_state()),
        lambda: None,
    ]
    states = []
    for i, step in enumerate(steps):
        step()
        text = capture.json()
        assert text == json.dumps(rng_state()), i
        states.append(text)
    assert len(set(states)) > 8  # the steps did change the generators
    # the captured text restores the generators exactly
    set_rng_state(json.loads(states[4]))
    assert capture.json() == states[4]
    set_rng_state(json.loads(states[4]))
    first = np.random.normal()
    set_rng_state(json.loads(states[4]))
    assert np.random.normal() == first
