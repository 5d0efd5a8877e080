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


def _stepped(kind: str):
    from torch import nn

    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), "adam": torch.optim.Adam}[
        kind
    ](net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    return net, opt


def test_optimizer_state_that_would_fail_at_the_next_step_is_refused_on_load():
    """A crafted optimizer.safetensors (the manifest re-sealed) must fail at load, before a
    resume changes the run directory, not at the first step after it."""
    import pytest

    from gradstep.checkpoint.content import load_optimizer_state, optimizer_state

    for kind, key in (("sgd", "0.momentum_buffer"), ("adam", "1.exp_avg")):
        _, opt = _stepped(kind)
        tensors, meta = optimizer_state(opt)
        tensors = {k: v.clone() for k, v in tensors.items()}
        load_optimizer_state(opt, tensors, json.loads(json.dumps(meta)))  # the real one loads
        for bad, match in (
            ({**tensors, key: torch.zeros(7)}, "is torch.float32 \\(7,\\)"),
            ({**tensors, key: tensors[key].double()}, "float64"),
            ({**tensors, "5.momentum_buffer": torch.zeros(2)}, "parameter 5"),
        ) + (
            (({k: v for k, v in tensors.items() if k != key}, "no 'exp_avg'"),)
            if kind == "adam"
            else ()
        ):
            with pytest.raises(ValueError, match=match):
                load_optimizer_state(opt, bad, json.loads(json.dumps(meta)))
