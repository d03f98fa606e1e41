"""Three ``cnnlstm tune`` workers on one study in a real PostgreSQL server; one is SIGKILLed mid-trial.

This is how a search scales past one machine: every worker points ``--storage`` at the same database. The server
is a throwaway one (``pg_server.py``); ``.ci/run`` makes sure PostgreSQL is installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg_server import find_pg_bin, postgres_server
from tune_toys import with_slow_reports

from cnnlstm.engine import fit

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
TRIALS = 4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres_url() -> str:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl not found (apt-get install postgresql; .ci/run does)")
    with postgres_server(bin_dir) as url:
        yield url


def _worker(recipe: Path, out: Path, url: str, slow: bool = False) -> subprocess.Popen:
    env = dict(ENV)
    if slow:  # the victim: its mid-trial window lasts seconds (tune_toys.SLOW_REPORT)
        env = with_slow_reports(env, out.parent)
    return subprocess.Popen(
        [sys.executable, "-m", "cnnlstm.tune", "--recipe", str(recipe), "--trials", str(TRIALS), "--out", str(out),
         "--storage", url, "--study", "toy", "--pruner", "none", "--heartbeat", "1", "--epochs", "3", "--no-test"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="toy", storage=_storage(url)).get_trials(deepcopy=False)


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def _storage(url: str) -> optuna.storages.RDBStorage:
    if url not in _STORAGES:  # one connection pool for the whole test, as a worker keeps one
        from cnnlstm.tune.study import make_storage

        _STORAGES[url] = make_storage(url, heartbeat=1)
    return _STORAGES[url]


def test_three_workers_on_postgres_survive_a_killed_worker(recipe_file: Path, tmp_path: Path,
                                                            postgres_url: str) -> None:
    # Each worker has its own --out, as on separate machines; the database is all they share.
    workers = [_worker(recipe_file, tmp_path / f"worker{i}", postgres_url, slow=i == 0) for i in range(3)]
    victim = workers[0]
    deadline, killed = time.monotonic() + 400, None
    while killed is None and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.1)
        try:
            mine = [t for t in _trials(postgres_url) if t.state == TrialState.RUNNING and t.intermediate_values
                    and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
        except KeyError:  # the study does not exist yet
            continue
        if mine:
            victim.send_signal(signal.SIGKILL)  # mid-trial: an epoch reported, more to come
            victim.wait()
            killed = mine[0]
    if killed is None:
        pytest.fail(f"the first worker never reached the middle of a trial: {victim.communicate()[0][-2000:]}")

    logs = []
    for proc in workers[1:]:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
        logs.append(out)
    trials = {t.number: t for t in _trials(postgres_url)}
    assert trials[killed.number].state == TrialState.FAIL  # its heartbeat stopped: failed by a live worker
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params  # the same configuration ran again, on another worker
    assert any(f"(retry of trial {killed.number})" in log for log in logs)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials.values()) == TRIALS
    assert sorted(trials) == list(range(len(trials)))  # trial numbers unique, none missing
    assert all(t.state != TrialState.RUNNING for t in trials.values())
    assert retries[0].user_attrs["worker"] != killed.user_attrs["worker"]  # a live worker picked it up

    # best.yaml (written by each surviving worker) refits to the best trial's validation score.
    best = min((t for t in trials.values() if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    best_yaml = tmp_path / "worker1" / "best.yaml"
    again = fit(str(best_yaml), out=tmp_path / "refit", verbose=False)
    assert again.metrics["val/loss"] == pytest.approx(best.value, rel=1e-4)
