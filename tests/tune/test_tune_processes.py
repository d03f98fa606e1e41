"""Real `python -m cnnlstm.tune` processes on one SQLite study: sharing a budget, and surviving SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from tune_toys import with_slow_reports

from cnnlstm.engine import fit
from cnnlstm.tune import tune

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
pytestmark = pytest.mark.slow  # each test starts `cnnlstm tune` processes


def _command(recipe: Path, out: Path, trials: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cnnlstm.tune", "--recipe", str(recipe), "--trials", str(trials), "--out", str(out),
            "--study", "toy", "--pruner", "none", "--heartbeat", "1", "--no-test", *extra]


def _finish(proc: subprocess.Popen, timeout: float = 400) -> str:  # a hang guard, generous for a busy machine
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="toy", storage=url).get_trials(deepcopy=False)


def test_two_processes_share_one_budget_then_best_yaml_reproduces(recipe_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    url = f"sqlite:///{out / 'study.db'}"
    procs = [subprocess.Popen(_command(recipe_file, out, 4), env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [_finish(p) for p in procs]
    trials = _trials(url)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # numbers unique, none missing
    # nothing lost: no trial left running or failed; a surplus claim given back is queued without parameters
    assert all(t.state != TrialState.RUNNING and t.state != TrialState.FAIL for t in trials)
    assert all(not t.params for t in trials if t.state == TrialState.WAITING)
    ran = [int(n) for log in logs for n in re.findall(r"^trial (\d+) ", log, flags=re.M)]
    assert sorted(ran) == sorted(t.number for t in finished)  # each trial run by exactly one process

    # A third call finds the budget spent: it runs no trial, tests the best one once and writes the outputs.
    result = tune(str(recipe_file), trials=4, storage=url, study="toy", out=out, log=lambda _: None)
    assert len(_trials(url)) == len(trials)
    best = min((t for t in finished if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert (result.best_number, result.best_value) == (best.number, best.value)
    assert {"trials.csv", "history.png", "importances.png", "best.yaml", "summary.json"} <= {
        p.name for p in out.iterdir()}
    # cnnlstm fit on best.yaml: same seed, same recipe -> the best trial's validation score and test result
    again = fit(str(out / "best.yaml"), out=tmp_path / "refit", verbose=False)
    assert again.metrics["val/loss"] == pytest.approx(best.value, rel=1e-4)
    assert again.metrics["test/acc"] == pytest.approx(result.test_metrics["test/acc"])
    assert yaml.safe_load((out / "best.yaml").read_text())["model"] == best.user_attrs["config"]["model"]


def test_a_killed_study_resumes_and_retries_the_killed_trial(recipe_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    url = f"sqlite:///{out / 'study.db'}"
    command = _command(recipe_file, out, 2, "--epochs", "4")
    # the victim pauses after each reported epoch (tune_toys.SLOW_REPORT), so the kill below lands mid-trial
    first = subprocess.Popen(command, env=with_slow_reports(ENV, tmp_path), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    killed = None
    while killed is None and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
        try:
            running = [t for t in _trials(url) if t.state == TrialState.RUNNING and t.intermediate_values]
        except Exception:  # the study or its tables do not exist yet
            continue
        if running:
            first.send_signal(signal.SIGKILL)  # mid-trial: at least one epoch reported, more to come
            first.wait()
            killed = running[0]
    assert killed is not None, "the first process never reached the middle of a trial"
    assert [t.state for t in _trials(url) if t.number == killed.number] == [TrialState.RUNNING]

    log = _finish(subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    trials = {t.number: t for t in _trials(url)}
    assert trials[killed.number].state == TrialState.FAIL  # its heartbeat stopped: failed, not lost
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params  # the same configuration ran again
    assert f"(retry of trial {killed.number})" in log
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials.values()) == 2
