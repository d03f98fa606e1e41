"""The worker loop when a dead trial is failed by one worker and its retry is queued a moment later.

Optuna fails a trial whose heartbeat stopped and then, in a second step, queues a copy with the same
parameters. A worker that looks between the two steps must not take the dead trial's slot with a fresh
trial, or the budget fills and the copy stays queued, never run. These tests drive ``run_worker`` with a
stand-in for training (``_run_trial``), so they need no model and no second process.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from cnnlstm.tune import runner
from cnnlstm.tune.study import MAX_RETRY, _retry_callback, make_storage, sqlite_url

LR = FloatDistribution(1e-4, 1e-1, log=True)


def _study(tmp_path: Path) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    storage = make_storage(sqlite_url(tmp_path / "study.db"), heartbeat=1)
    return optuna.create_study(study_name="race", storage=storage), storage


def _dead(study: optuna.Study, lr: float, **system_attrs: object) -> optuna.trial.FrozenTrial:
    """A trial failed for its stopped heartbeat, as ``fail_stale_trials`` leaves it before the retry exists."""
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"lr": lr}, distributions={"lr": LR},
                                        system_attrs=system_attrs))
    return study.get_trials(deepcopy=False)[-1]


def _fake_run_trial(ran: list[tuple[int, float, int | None]]):
    def run(study, trial, plan, out, retry_of, numerics, log):  # the signature of runner._run_trial
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)  # a retry gets its stored value back
        ran.append((trial.number, lr, retry_of))
        study.tell(trial, lr)
        return TrialState.COMPLETE
    return run


def test_a_dead_trial_holds_its_slot_until_its_retry_is_queued(tmp_path: Path) -> None:
    study, _ = _study(tmp_path)
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=1.0, params={"lr": 0.01},
                                        distributions={"lr": LR}))
    dead = _dead(study, 0.003)
    seen: dict[int, float] = {}
    assert runner._awaiting_retry(study.get_trials(), seen, patience=60) == 1
    _retry_callback()(study, dead)  # the second step: the copy is queued
    assert runner._awaiting_retry(study.get_trials(), seen, patience=60) == 0
    # A trial that failed in a live worker records its error and gets no retry; one out of retries gets none.
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, user_attrs={"error": "ValueError: x"}))
    _dead(study, 0.02, retry_history=list(range(MAX_RETRY)), failed_trial=0)
    assert runner._awaiting_retry(study.get_trials(), seen, patience=60) == 0
    # A retry that never comes (its failing worker died in between) stops holding the slot after `patience`.
    _dead(study, 0.05)
    assert runner._awaiting_retry(study.get_trials(), seen, patience=0.2) == 1
    time.sleep(0.3)
    assert runner._awaiting_retry(study.get_trials(), seen, patience=0.2) == 0


def test_ask_takes_a_queued_retry_before_an_earlier_queued_trial(tmp_path: Path) -> None:
    study, storage = _study(tmp_path)
    given_back = study.ask()  # a surplus trial a worker gave back: queued, no parameters, a lower number
    storage.set_trial_state_values(given_back._trial_id, TrialState.WAITING)
    _retry_callback()(study, _dead(study, 0.003))
    first = runner._ask(study, storage)
    assert first.number != given_back.number
    assert storage.get_trial(first._trial_id).system_attrs["failed_trial"] == 1
    assert first.suggest_float("lr", 1e-4, 1e-1, log=True) == pytest.approx(0.003)
    assert runner._ask(study, storage).number == given_back.number  # then the queue as Optuna orders it
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.FAIL, TrialState.RUNNING]


def test_a_worker_between_the_fail_and_the_retry_waits_and_then_runs_the_retry(tmp_path: Path,
                                                                                monkeypatch) -> None:
    study, storage = _study(tmp_path)
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=1.0, params={"lr": 0.01},
                                        distributions={"lr": LR}))
    dead = _dead(study, 0.003)  # failed by another worker, whose retry callback has not run yet
    ran: list[tuple[int, float, int | None]] = []
    monkeypatch.setattr(runner, "_run_trial", _fake_run_trial(ran))
    queue = threading.Timer(1.5, lambda: _retry_callback()(study, dead))  # the other worker's second step
    queue.start()
    try:
        finished = runner.run_worker(study, storage, plan=None, trials=2, out=tmp_path, heartbeat=1,
                                     log=lambda line: None)
    finally:
        queue.join()
    assert finished == 1
    assert len(ran) == 1 and ran[0][1] == pytest.approx(0.003) and ran[0][2] == dead.number  # the retry ran
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]  # nothing left queued
