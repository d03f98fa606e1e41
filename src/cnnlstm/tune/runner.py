"""The worker loop: claim a trial of the shared budget, sample its recipe, train it, record the result.

Any number of workers (``cnnlstm tune`` processes) run this loop on one study. The budget is ``trials``
finished trials (complete or pruned) in the study, whoever ran them:

- a worker asks for a trial only while finished + running trials are below the budget;
- two workers can pass that check at the same moment, so after ``ask`` each ranks the running and
  finished trials by start time and gives a surplus trial back (state WAITING: queued, no parameters drawn);
- a trial whose worker died stops sending heartbeats; the next worker to look marks it FAILED and Optuna's
  retry callback queues a copy with the same parameters, which the next ``ask`` takes before any other queued
  trial. A worker whose remaining budget is held by running trials therefore waits instead of leaving: one of
  them may be dead. Failing the dead trial and queueing its copy are two steps, so between them the dead trial
  still holds its slot (:func:`_awaiting_retry`); otherwise a worker could start a fresh trial in that moment,
  fill the budget and leave the copy queued, never run.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import socket
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from cnnlstm.errors import CnnLstmError, ConfigError
from cnnlstm.tasks import TrainingDivergedError
from cnnlstm.tune.pruning import PruningCallback
from cnnlstm.tune.search import SearchPlan
from cnnlstm.tune.study import MAX_RETRY, make_sampler
from cnnlstm.tune.trial_fit import NumericState, fit_trial

__all__ = ["run_worker", "count_states", "FINISHED", "MAX_CONSECUTIVE_FAILURES"]

#: trial states that use up the budget
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

#: a worker gives up after this many failed trials in a row (a broken recipe, not an unlucky sample)
MAX_CONSECUTIVE_FAILURES = 3

#: this process, as recorded on each trial it runs (``host:pid``)
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def count_states(study: optuna.Study) -> Counter:
    """``Counter`` of the study's trials by state."""
    return Counter(t.state for t in study.get_trials(deepcopy=False))


class _Heartbeat:
    """Record the trial's heartbeat every ``interval`` seconds on a thread while the trial runs."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        while True:
            self._storage.record_heartbeat(self._trial_id)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _holds_slot(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether trial ``number`` is among the first ``budget`` trials to have started (finished or running)."""
    claimed = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    order = sorted(claimed, key=lambda t: (t.datetime_start or datetime.datetime.max, t.number))
    return [t.number for t in order].index(number) < budget


def _awaiting_retry(trials: list[optuna.trial.FrozenTrial], first_seen: dict[int, float], patience: float) -> int:
    """How many trials failed for a stopped heartbeat and still wait for their retry to be queued.

    Such a trial is FAIL with no ``error`` (a worker that sees its own trial fail records one), its retry
    budget (:data:`~cnnlstm.tune.study.MAX_RETRY`) is not spent, and no trial names it in its
    ``retry_history``. It counts as a claimed slot for ``patience`` seconds after this worker first saw it
    (``first_seen`` is updated), in case the worker that failed it died before queueing the retry.
    """
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    now, waiting = time.monotonic(), 0
    for t in trials:
        if (t.state != TrialState.FAIL or "error" in t.user_attrs or t.number in retried
                or len(t.system_attrs.get("retry_history", ())) >= MAX_RETRY):
            continue
        if now - first_seen.setdefault(t.number, now) < patience:
            waiting += 1
    return waiting


def _ask(study: optuna.Study, storage: RDBStorage) -> optuna.Trial:
    """``study.ask()``, except that a queued retry of a dead trial is taken before any other queued trial (a
    surplus trial given back by :func:`run_worker` has a lower number and would otherwise be taken first)."""
    for frozen in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        if "failed_trial" not in frozen.system_attrs:
            continue
        try:
            if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):  # atomic: one taker
                study._thread_local.cached_all_trials = None
                return optuna.Trial(study, frozen._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    with warnings.catch_warnings():  # "heartbeat is supposed to be used with Study.optimize": this loop beats
        warnings.simplefilter("ignore", UserWarning)
        return study.ask()


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(config)  # validated recipes hold only YAML scalars, lists and dicts


def _run_trial(study: optuna.Study, trial: optuna.Trial, plan: SearchPlan, out: Path, retry_of: int | None,
               numerics: NumericState, log: Callable[[str], None]) -> TrialState:
    """Sample, train and tell one trial (``retry_of``: the dead trial it repeats; ``numerics``: the torch settings
    the worker started with); return its final state."""
    start = time.perf_counter()
    state, value, note = TrialState.FAIL, None, ""
    try:
        family, values = plan.sample(trial)  # a retried trial gets its stored parameters back
        config = plan.trial_config(family, values)
        run_dir = out / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("config", _jsonable(config))
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("worker", WORKER)  # which machine and process ran it (workers share one database)
        # The recipe runs exactly as stored: best.yaml is this config, so `cnnlstm fit` repeats the trial.
        metrics = fit_trial(config, run_dir, [PruningCallback(trial, plan.metric)], numerics)
        value = metrics.get(plan.metric)
        if value is None or not math.isfinite(float(value)):
            raise ConfigError(f"the trial finished without a finite {plan.metric} (got {value!r}); "
                              f"it logs {sorted(k for k in metrics if k.startswith('val/'))}")
        value = float(value)
        trial.set_user_attr("best_epoch", int(metrics.get("best_epoch", 0)))
        trial.set_user_attr("epochs", int(metrics.get("epochs", 0)))
        state = TrialState.COMPLETE
        note = f"{plan.metric}={value:.4g} (best epoch {metrics.get('best_epoch')}/{metrics.get('epochs')})"
    except optuna.TrialPruned as exc:
        state, note = TrialState.PRUNED, str(exc)
    except TrainingDivergedError as exc:
        # A diverging learning rate is a bad sample, not a broken recipe: pruned (worst), so TPE learns from it.
        trial.set_user_attr("diverged", str(exc).splitlines()[0])
        state, note = TrialState.PRUNED, "pruned: the loss diverged"
    except (Exception, KeyboardInterrupt) as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:1000])
        study.tell(trial, state=TrialState.FAIL)
        log(f"trial {trial.number} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        if isinstance(exc, KeyboardInterrupt):
            raise
        return TrialState.FAIL
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    retry = f" (retry of trial {retry_of})" if retry_of is not None else ""
    log(f"trial {trial.number}{retry} {state.name.lower()} in {time.perf_counter() - start:.1f} s: {note}  "
        f"{trial.params}")
    return state


def run_worker(study: optuna.Study, storage: RDBStorage, plan: SearchPlan, *, trials: int, out: Path,
               timeout: float | None = None, sampler: str = "tpe", seed: int = 0, heartbeat: float = 60.0,
               log: Callable[[str], None] = print) -> int:
    """Run trials of ``study`` until it holds ``trials`` finished ones (or ``timeout`` seconds pass).

    Args:
        study: the shared study (its pruner stops weak trials).
        storage: the study's storage (heartbeats, giving back surplus trials).
        plan: the base recipe, objective and spaces.
        trials: the study's budget of finished (complete or pruned) trials.
        out: where trial run directories go (``out/trials/NNNN``).
        timeout: start no trial after this many seconds.
        sampler: ``tpe`` or ``random``; reseeded per trial from ``seed`` and the study's trial count, so
            one worker is reproducible and parallel workers draw different start-up points.
        heartbeat: seconds between heartbeats (and between looks while waiting on other workers' trials).
        log: where one line per trial goes.

    Returns:
        The number of trials this worker finished.

    Raises:
        CnnLstmError: :data:`MAX_CONSECUTIVE_FAILURES` trials in a row failed (the last error is quoted).

    Example:
        >>> run_worker(study, storage, plan, trials=20, out=Path("runs/tune"))  # doctest: +SKIP
    """
    started = time.monotonic()
    numerics = NumericState.capture()  # every trial starts from these, as a fresh `cnnlstm fit` process would
    finished = failures = 0
    poll = max(0.5, min(float(heartbeat), 5.0))
    first_seen: dict[int, float] = {}  # dead trials whose retry is not queued yet: when this worker saw them
    while True:
        _fail_stale(study)
        all_trials = study.get_trials(deepcopy=False)
        counts = Counter(t.state for t in all_trials)
        done = sum(counts[s] for s in FINISHED)
        if done >= trials or (timeout is not None and time.monotonic() - started >= timeout):
            return finished
        claimed = done + counts[TrialState.RUNNING] + _awaiting_retry(all_trials, first_seen, 10 * poll + 30)
        if claimed >= trials:
            time.sleep(poll)  # the rest of the budget is running elsewhere; a dead worker's trial comes back
            continue
        study.sampler = make_sampler(sampler, seed + sum(counts.values()))
        trial = _ask(study, storage)
        if not _holds_slot(study, trial.number, trials):
            # Another worker claimed the last slot at the same moment: queue this trial again, untouched.
            storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
            time.sleep(poll)
            continue
        retry_of = storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
        with _Heartbeat(storage, trial._trial_id, heartbeat):
            state = _run_trial(study, trial, plan, out, retry_of, numerics, log)
        if state == TrialState.FAIL:
            failures += 1
            if failures >= MAX_CONSECUTIVE_FAILURES:
                error = storage.get_trial(trial._trial_id).user_attrs.get("error", "")
                raise CnnLstmError(f"{failures} trials in a row failed; the last: {error}")
        else:
            failures = 0
            finished += 1
