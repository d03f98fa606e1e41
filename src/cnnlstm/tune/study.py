"""Studies in a database: storage with heartbeats, the seeded TPE sampler and the pruners.

Every study lives in an Optuna RDB storage (SQLite by default, any SQLAlchemy URL such as PostgreSQL), so
several ``cnnlstm tune`` processes share one study and a killed one can be resumed. Each running trial
writes a heartbeat; a trial whose heartbeat is older than the grace period (its process died) is marked
FAILED by the next process that looks, and a copy with the same parameters is queued to run again.
"""

from __future__ import annotations

import inspect
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage

from cnnlstm.errors import ConfigError

__all__ = ["PRUNERS", "SAMPLERS", "sqlite_url", "make_storage", "make_sampler", "make_pruner", "open_study"]

PRUNERS = ("hyperband", "median", "none")
SAMPLERS = ("tpe", "random")

#: how often a trial may fail by a dead process before it is given up
MAX_RETRY = 3


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of an SQLite file (absolute, so every process finds the same file).

    Example:
        >>> sqlite_url("/tmp/study.db")
        'sqlite:////tmp/study.db'
    """
    return f"sqlite:///{Path(path).resolve()}"


def _retry_callback() -> object:
    # Optuna 4.9 renamed RetryFailedTrialCallback; the old name still works there with a warning.
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(max_retry=MAX_RETRY)


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` names SQLAlchemy's default driver, psycopg2; with only psycopg 3 installed (cnnlstm's
    ``postgres`` extra), use that one. A URL naming its driver (``postgresql+psycopg2://``) is kept as written."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_storage(url: str, *, heartbeat: int = 60) -> RDBStorage:
    """An RDB storage with heartbeats every ``heartbeat`` s and a grace period of two heartbeats.

    Args:
        url: SQLAlchemy URL (``sqlite:///study.db``, ``postgresql://user@host/db``; PostgreSQL through
            psycopg 3 where psycopg2 is not installed: ``pip install "cnnlstm[postgres]"``).
        heartbeat: seconds between a running trial's heartbeats.

    Raises:
        ConfigError: not a database URL, or the database cannot be opened.

    Example:
        >>> storage = make_storage("sqlite:////tmp/cnnlstm-doctest.db", heartbeat=30)  # doctest: +SKIP
    """
    if "://" not in url:
        raise ConfigError(f"--storage must be a database URL such as sqlite:///study.db or "
                          f"postgresql://user:pass@host/db, got {url!r}")
    url = _with_installed_driver(url)
    if heartbeat < 1:
        raise ConfigError(f"the heartbeat interval must be >= 1 s, got {heartbeat}")
    kwargs: dict[str, object] = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat}
    name = "heartbeat_stale_trial_callback"
    if name not in inspect.signature(RDBStorage.__init__).parameters:
        name = "failed_trial_callback"
    kwargs[name] = _retry_callback()
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
        # Several processes write one SQLite file; wait for its lock instead of failing at once.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    last: Exception | None = None
    for attempt in range(5):  # two processes creating the tables at the same moment: one retries
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, **kwargs)  # type: ignore[arg-type]
        except ImportError as exc:
            raise ConfigError(f"the driver for {url.split(':', 1)[0]} is not installed ({exc})") from None
        except Exception as exc:  # sqlalchemy's OperationalError/IntegrityError, without importing sqlalchemy
            last = exc
            time.sleep(0.2 * (attempt + 1))
    raise ConfigError(f"cannot open the study storage {url}: {str(last).splitlines()[0]}")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler: ``tpe`` (multivariate, grouped for conditional spaces, constant liar for parallel
    workers) or ``random``; both seeded.

    Example:
        >>> type(make_sampler("tpe", 0)).__name__
        'TPESampler'
    """
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """The pruner: ``hyperband`` (successive halving brackets over epochs), ``median`` (stop a trial below
    the median of earlier ones at the same epoch, after 5 complete trials and a warm-up) or ``none``.

    Example:
        >>> type(make_pruner("median", 20)).__name__
        'MedianPruner'
    """
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, max_epochs // 5))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def open_study(storage: RDBStorage, name: str, direction: str, sampler: optuna.samplers.BaseSampler,
               pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create study ``name`` in ``storage``, or join it when another process created it first.

    Raises:
        ConfigError: the stored study optimises in the other direction.

    Example:
        >>> study = open_study(make_storage("sqlite:///s.db"), "demo", "minimize", make_sampler("tpe", 0),
        ...                    make_pruner("none", 5))  # doctest: +SKIP
    """
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    stored = study.direction.name.lower()
    if stored != direction:
        raise ConfigError(f"study {name!r} in this storage was created to {stored} and this search would "
                          f"{direction}; pick another --study name or search.metric")
    return study
