"""best.yaml repeats the best trial: a fresh `cnnlstm fit` process trains it to the same numbers, epoch by epoch.

Real data (UEA BasicMotions, bundled with aeon) and the shipped default space, which samples dropout: a trial
that drew different dropout masks, initial weights or batches than a fresh fit shows up in its first epoch.
The study runs inside this (long-lived) test process, after whatever ran in it before, like a tune process
whose earlier trials were pruned or failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from tune_toys import toy_recipe

from cnnlstm.tune import tune
from cnnlstm.tune.search import resolve_search
from cnnlstm.tune.trial_fit import NumericState, fit_trial

CLI = "import sys; from cnnlstm.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture
def one_thread():
    """One torch thread here and in the refits: fast on a shared machine, and the same reduction order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _refit(recipe: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env.pop("CNNLSTM_RUN_DIR", None)  # set by fits in this process; the fresh run must pick its own
    return subprocess.Popen([sys.executable, "-c", CLI, "fit", "--recipe", str(recipe), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _assert_same_history(trial_dir: Path, refit_dir: Path) -> None:
    trial = json.loads((trial_dir / "history.json").read_text())
    again = json.loads((refit_dir / "history.json").read_text())
    assert [h["epoch"] for h in again] == [h["epoch"] for h in trial]
    for a, b in zip(trial, again, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], abs=1e-6), (trial_dir.name, a["epoch"], key)


@pytest.mark.slow
def test_best_yaml_refit_in_a_fresh_process_repeats_the_best_trial(tmp_path: Path, one_thread: None) -> None:
    out = tmp_path / "tune"
    result = tune("basic_motions", trials=2, max_epochs=2, pruner="none", out=out, test=False, log=lambda _: None)
    assert result.counts == {"COMPLETE": 2}
    best_dir = out / "trials" / f"{result.best_number:04d}"
    best_yaml = yaml.safe_load((out / "best.yaml").read_text())
    ran = yaml.safe_load((best_dir / "config.yaml").read_text())
    assert best_yaml.pop("description").startswith(ran.pop("description"))  # plus the tuning note
    assert best_yaml == ran  # the exact recipe the trial trained, key for key
    assert ran["model"]["dropout"] > 0  # dropout draws from the global RNG: the case a stale RNG would break

    # Trial 1 ran after trial 0 in this process; both must be what a fresh process trains.
    second = out / "trials" / "0001"
    refits = {best_dir: tmp_path / "refit-best", second: tmp_path / "refit-0001"}
    jobs = {best_dir: _refit(out / "best.yaml", refits[best_dir])}
    if best_dir != second:
        jobs[second] = _refit(second / "config.yaml", refits[second])
    for proc in jobs.values():
        _, err = proc.communicate(timeout=400)  # a hang guard, generous for a busy machine
        assert proc.returncode == 0, err[-3000:]
    for trial_dir in jobs:
        _assert_same_history(trial_dir, refits[trial_dir])
    metrics = json.loads((refits[best_dir] / "metrics.json").read_text())
    assert metrics["val/loss"] == pytest.approx(result.best_value, abs=1e-6)
    assert metrics["best_epoch"] == json.loads((best_dir / "metrics.json").read_text())["best_epoch"]



class _Seen(pl.Callback):
    """Records the numeric settings training started under."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.state = NumericState.capture()


def test_a_trial_trains_under_the_workers_settings_not_what_an_earlier_trial_left(tmp_path: Path,
                                                                                  one_thread: None) -> None:
    start = NumericState.capture()
    config = resolve_search(toy_recipe(tmp_path)).base
    seen = _Seen()
    try:  # what a library in an earlier trial may leave behind: cuDNN autotuning, TF32 matmuls, more threads
        torch.backends.cudnn.benchmark = not start.cudnn_benchmark
        torch.set_float32_matmul_precision("medium" if start.matmul_precision != "medium" else "high")
        torch.set_num_threads(2)
        assert NumericState.capture() != start
        fit_trial(config, tmp_path / "trial", [seen], start)
    finally:
        start.restore()
    assert seen.state == start
