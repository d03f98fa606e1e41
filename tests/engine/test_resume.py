"""Resume: a fit killed with SIGKILL continues from last.ckpt and ends with the uninterrupted run's numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlstm.engine.resume import EpochShuffleSampler

TOY = Path(__file__).with_name("toy.yaml")
# 12 batches per epoch, a checkpoint every 2 optimiser steps: a kill lands mid-epoch, after a step checkpoint.
SETTINGS = ["trainer.max_epochs=3", "data.batch_size=4", "data.options.n_train=60", "data.options.n_test=8",
            "trainer.checkpoint_every_n_steps=2", "model.hidden_size=4", "data.augment={jitter: 0.2, p: 0.5}"]
CLI = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import toys\n"
       "from cnnlstm.cli import main; sys.exit(main(sys.argv[1:]))")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", CLI, *args]


def _env() -> dict[str, str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("CNNLSTM_RUN_DIR", None)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted run and a run SIGKILLed after its first checkpoint, then resumed (all subprocesses)."""
    root = tmp_path_factory.mktemp("resume")
    full, killed = root / "full", root / "killed"
    reference = subprocess.Popen(_cli("fit", "--recipe", str(TOY), "--out", str(full), "--set", *SETTINGS),
                                 env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_cli("fit", "--recipe", str(TOY), "--out", str(killed), "--set", *SETTINGS),
                              env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < step < 3 * 12, step  # killed after a checkpoint, before the end
    resumed = subprocess.run(_cli("fit", "--resume", str(killed)), env=_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-2000:]
    return full, killed


@pytest.mark.slow
def test_killed_then_resumed_run_equals_the_uninterrupted_run(runs) -> None:
    full, killed = runs
    expected = json.loads((full / "metrics.json").read_text())
    got = json.loads((killed / "metrics.json").read_text())
    expected.pop("fit_seconds"), got.pop("fit_seconds")
    assert got == expected  # exact: every float, best epoch, gap
    assert json.loads((killed / "history.json").read_text()) == json.loads((full / "history.json").read_text())


@pytest.mark.slow
def test_resumed_weights_equal_the_uninterrupted_weights(runs) -> None:
    from safetensors.torch import load_file

    full, killed = runs
    a = load_file(str(full / "checkpoints" / "best.safetensors"))
    b = load_file(str(killed / "checkpoints" / "best.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_refuses_overrides(runs, capsys) -> None:
    from cnnlstm.cli import main

    assert main(["fit", "--resume", str(runs[1]), "--set", "trainer.max_epochs=9"]) == 2
    assert "--resume continues a run exactly as configured" in capsys.readouterr().err


def test_epoch_sampler_skips_exactly_the_samples_already_seen() -> None:
    whole = EpochShuffleSampler(10, seed=3)
    whole.set_epoch(2)
    order = list(whole)
    part = EpochShuffleSampler(10, seed=3)
    part.resume_at(epoch=2, skip=4)
    assert list(part) == order[4:]
    assert list(part) == order  # the skip applies to one iteration only
    whole.set_epoch(3)
    assert list(whole) != order and sorted(whole) == list(range(10))


def test_grouped_epoch_order_keeps_groups_together_and_still_shuffles() -> None:
    groups = [i % 7 for i in range(40)]  # 7 groups of 5-6 samples, interleaved as rows of a CSV can be
    sampler = EpochShuffleSampler(40, seed=1, groups=groups)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(40))
        runs = [groups[i] for i in order]
        changes = sum(a != b for a, b in zip(runs, runs[1:], strict=False))
        assert changes == 6  # every group's samples are consecutive
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]
    group_orders = {tuple(dict.fromkeys(groups[i] for i in o)) for o in orders}
    assert len(group_orders) == 3  # the order of the groups changes too
    part = EpochShuffleSampler(40, seed=1, groups=groups)
    part.resume_at(epoch=2, skip=13)
    assert list(part) == orders[2][13:]
    with pytest.raises(ValueError, match="groups names 3 samples"):
        EpochShuffleSampler(4, seed=0, groups=[0, 1, 1])
