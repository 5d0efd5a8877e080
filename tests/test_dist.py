"""DDP under torchrun: the same model whatever the world size (see gradstep.data.sampler's
sharding rule and gradstep.loop.forward_backward's weights).

Real ``torchrun`` (``torch.distributed.run --standalone``: a rendezvous on a free port of this
machine), gloo on the CPU, one thread a process, each launch with a timeout so a hang fails the
test. The single-process references run the same child script without torchrun.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from gradstep.checkpoint import open_checkpoint

CHILD = Path(__file__).with_name("dist_child.py")
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(key, None)


def train(runs: Path, name: str, world: int, **settings) -> subprocess.CompletedProcess:
    """Run the child on ``world`` processes (1: without torchrun)."""
    args = [str(CHILD), str(runs), name, json.dumps(settings)]
    if world > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        args = [*launcher, f"--nproc-per-node={world}", *args]
    else:
        args = [sys.executable, *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=240, cwd=ROOT, env=ENV)


def run_all(runs: Path, jobs: dict[str, tuple[int, dict]]) -> dict[str, Path]:
    """Several runs at once (the machine has two cores; each run is mostly start-up)."""
    with ThreadPoolExecutor(2) as pool:
        done = dict(
            zip(
                jobs,
                pool.map(lambda j: train(runs, j, jobs[j][0], **jobs[j][1]), jobs),
                strict=True,
            )
        )
    for name, proc in done.items():
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
    return {name: runs / name for name in jobs}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return open_checkpoint(run / "checkpoints" / "latest").model_tensors()


def max_diff(a: Path, b: Path) -> float:
    ta, tb = weights(a), weights(b)
    assert ta.keys() == tb.keys()
    return max((ta[k].double() - tb[k].double()).abs().max().item() for k in ta)


def records(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        out.append({k: v for k, v in r.items() if k not in ("time_s", "grad_norm_max")})
    return out


def assert_same_metrics(a: Path, b: Path, tol: float = 1e-6) -> None:
    ra, rb = records(a), records(b)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float):
                assert abs(x[k] - y[k]) <= tol, (k, x, y)
            else:
                assert x[k] == y[k], (k, x, y)


SGD = dict(optimizer="sgd", momentum=0.9, lr=0.05)
ADAM = dict(optimizer="adam", lr=0.01)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """2 ranks × batch 16 and 1 process × batch 32, with SGD + momentum and with Adam; N = 1003
    (802 training samples: the last block of 32 holds 2; 201 validation: its last holds 9)."""
    runs = tmp_path_factory.mktemp("ddp")
    jobs = {
        "sgd-1": (1, dict(batch_size=32, **SGD)),
        "sgd-2": (2, dict(batch_size=16, **SGD)),
        "adam-1": (1, dict(batch_size=32, **ADAM)),
        "adam-2": (2, dict(batch_size=16, **ADAM)),
    }
    return run_all(runs, jobs), runs


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_two_ranks_of_16_train_the_model_one_process_of_32_does(pairs, opt):
    done, _ = pairs
    one, two = done[f"{opt}-1"], done[f"{opt}-2"]
    assert max_diff(one, two) <= 1e-5
    s1, s2 = (json.loads((r / "summary.json").read_text()) for r in (one, two))
    assert s1["global_step"] == s2["global_step"] == 3 * 26  # ceil(802 / 32) steps an epoch
    assert s2["data"]["effective_batch"] == 32 and s2["data"]["train_samples"] == 802
    assert_same_metrics(one, two)  # train and validation loss/accuracy: global, exact


def test_one_gradient_all_reduce_per_optimizer_step(tmp_path):
    """accumulate = 3 under DDP: no_sync() for the first two micro-batches of every step."""
    done = run_all(tmp_path, {"acc": (2, dict(batch_size=16, accumulate=3, **SGD))})
    counts = json.loads((tmp_path / "acc.allreduces").read_text())
    assert counts["steps"] == 3 * 9  # 26 micro-batches an epoch, in steps of 3
    assert counts["calls"] == counts["steps"]  # one bucket (a tiny model) per step
    assert json.loads((done["acc"] / "summary.json").read_text())["global_step"] == 27


def test_effective_batch_gives_the_same_model_on_1_2_and_4_processes(tmp_path):
    jobs = {f"w{w}": (w, dict(batch_size=16, effective_batch=64, **SGD)) for w in (1, 2, 4)}
    done = run_all(tmp_path, jobs)
    assert max_diff(done["w1"], done["w2"]) <= 1e-5
    assert max_diff(done["w1"], done["w4"]) <= 1e-5
    for w, acc in ((1, 4), (2, 2), (4, 1)):
        config = (done[f"w{w}"] / "config.toml").read_text()
        assert f"accumulate = {acc}\n" in config, w


def test_a_rank_whose_share_of_the_last_block_is_empty_still_takes_the_step(tmp_path):
    """833 training samples: the last block of 2 × 16 holds one sample, rank 1 has none."""
    jobs = {
        "one": (1, dict(batch_size=32, n=1042, **SGD)),
        "two": (2, dict(batch_size=16, n=1042, **SGD)),
    }
    done = run_all(tmp_path, jobs)
    assert max_diff(done["one"], done["two"]) <= 1e-5
    assert_same_metrics(done["one"], done["two"])


def test_an_error_on_one_rank_ends_the_job_without_a_hang(tmp_path):
    proc = train(tmp_path, "fails", 2, batch_size=16, fail_rank=1, **SGD)
    assert proc.returncode != 0
    assert "rank 1 failed on purpose" in proc.stderr


def test_sync_batchnorm_gives_the_single_process_weights_and_running_statistics(tmp_path):
    import gradstep as gs

    bn = dict(model_args={"hidden": [16], "batchnorm": True}, **SGD)
    jobs = {
        "one": (1, dict(batch_size=32, **bn)),
        "sync": (2, dict(batch_size=16, sync_batchnorm=True, **bn)),
        "plain": (2, dict(batch_size=16, n=1010, **bn)),  # the last block: 4 a rank
    }
    procs = {}
    with ThreadPoolExecutor(2) as pool:
        for name, proc in zip(
            jobs,
            pool.map(lambda j: train(tmp_path, j, jobs[j][0], **jobs[j][1]), jobs),
            strict=True,
        ):
            procs[name] = proc
            assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
    one, sync, plain = tmp_path / "one", tmp_path / "sync", tmp_path / "plain"
    assert any("running_var" in k for k in weights(one))  # the statistics are compared too
    ta, tb = weights(one), weights(sync)
    for key in ta:  # ≤ 1e-4, relative to the value's size (running_var reaches ~50 here)
        scale = max(1.0, ta[key].double().abs().max().item())
        assert (ta[key].double() - tb[key].double()).abs().max().item() <= 1e-4 * scale, key
    plain_one = tmp_path / "plain-one"
    assert train(tmp_path, "plain-one", 1, batch_size=32, n=1010, **bn).returncode == 0
    assert max_diff(plain_one, plain) > 1e-3  # each rank's own statistics: another model
    warning = "each normalises its own micro-batch (set [train] sync_batchnorm = true"
    assert procs["plain"].stderr.count(warning) == 1  # once, from rank 0
    assert warning not in procs["sync"].stderr
    # the checkpoint holds the plain module: one process loads and evaluates it
    model = gs.load_model(sync / "checkpoints" / "latest")
    assert not any("Sync" in type(m).__name__ for m in model.modules())
    assert set(model.network.state_dict()) == set(weights(one))


SLOW_MODEL = '''
import os, time
from torch import nn


class Net(nn.Module):
    """Rank 1 stalls in its 3rd forward: rank 0 waits for its gradients past timeout_s."""

    def __init__(self, in_features: int = 6, out_features: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3 and os.environ.get("RANK") == "1":
            time.sleep(12)
        return self.fc(x)
'''


def test_a_collective_that_waits_past_timeout_s_ends_the_job_with_one_line(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW_MODEL)
    (tmp_path / "slow.toml").write_text(
        '[data]\nsource = "random"\nn = 200\nfeatures = 6\nclasses = 3\n'
        '[model]\nname = "slow.py:Net"\n[model.args]\nin_features = 6\nout_features = 3\n'
        f'[train]\nepochs = 1\nbatch_size = 8\nprogress = false\n[run]\ndir = "{tmp_path}"\n'
        '[dist]\ntimeout_s = 3\n[checkpoint]\nevery = "never"\n'
    )
    args = [sys.executable, "-m", "gradstep", "fit", str(tmp_path / "slow.toml"), "--nproc", "2"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("gradstep: error")]
    assert errors[0].startswith(
        "gradstep: error: rank 0: a collective with the other ranks "
        "failed: Timed out waiting 3000ms"
    ), proc.stderr[-3000:]


def test_nproc_from_python_says_how_to_launch_instead():
    import gradstep as gs
    from gradstep.errors import UserError

    with pytest.raises(UserError, match="torchrun --standalone --nproc-per-node 2 script.py"):
        gs.Trainer(nproc=2, epochs=1)
    gs.Trainer(nproc=1, epochs=1)  # one process: this one


def test_bad_settings_under_nproc_are_said_once_with_exit_2(tmp_path):
    """A bad key: refused before any process starts; a missing data file: found by every
    rank before they meet, said once (by rank 0)."""
    gradstep = [sys.executable, "-m", "gradstep", "fit"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepohcs = 3\n")
    missing = tmp_path / "missing.toml"
    missing.write_text(f'[data]\nsource = "csv"\npath = "nowhere.csv"\n[run]\ndir = "{tmp_path}"\n')
    for config, says in ((bad, "epohcs"), (missing, "nowhere.csv")):
        args = [*gradstep, str(config), "--nproc", "2"]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
        assert proc.returncode == 2, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and says in errors[0], proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "missing").exists()


def test_a_busy_rendezvous_port_is_one_clear_line_and_no_run_directory(tmp_path):
    import socket

    (tmp_path / "ok.toml").write_text(
        f'[data]\nsource = "random"\nn = 100\n[train]\nepochs = 1\n[run]\ndir = "{tmp_path}/runs"\n'
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**ENV, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        args = [sys.executable, "-m", "gradstep", "fit", str(tmp_path / "ok.toml")]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot join the process group at 127.0.0.1:{port}" in lines[0]
    assert "address already in use" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_the_out_of_memory_fallback_is_refused_under_ddp():
    from gradstep import dist
    from gradstep.config import Config
    from gradstep.errors import UserError

    cfg = Config.model_validate({"train": {"on_oom": "fallback"}})
    with pytest.raises(UserError, match="works in one process only"):
        dist.accumulate_per_world(cfg, 2)
