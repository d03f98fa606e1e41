"""trainer.ensemble: members with their own seeds, probabilities averaged, scored again from the run directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from toys import FixedLogits

from cnnlstm.data import load_dataset
from cnnlstm.engine import evaluate_run, fit, load_weights
from cnnlstm.engine.ensemble import EnsembleClassifier, ensemble_size
from cnnlstm.engine.rundir import weights_path
from cnnlstm.errors import ConfigError

RECIPE = {"name": "toy_ensemble", "seed": 0,
          "data": {"spec": "toy:a", "batch_size": 8, "options": {"n_train": 30, "n_test": 8}},
          "model": {"name": "toy_lstm", "hidden_size": 4}, "optim": {"lr": 0.05, "scheduler": "none"},
          "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False, "ensemble": 2},
          "early_stopping": {"enabled": False}}


def test_ensemble_averages_probabilities() -> None:
    a, b = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 3.0], [1.0, 1.0]])
    out = EnsembleClassifier([FixedLogits(a), FixedLogits(b)])(x=torch.zeros(2, 1))
    mean = (a.softmax(1) + b.softmax(1)) / 2  # by hand: [[.44, .56], [.37, .63]]
    torch.testing.assert_close(out.softmax(1), mean)
    y = torch.tensor([0, 1])
    assert float(F.cross_entropy(out, y)) == pytest.approx(float(-mean[[0, 1], y].log().mean()), rel=1e-6)
    with pytest.raises(ConfigError, match="trainer.ensemble"):
        EnsembleClassifier([type("Frames", (FixedLogits,), {"output_kind": "frames"})(a)])
    with pytest.raises(ConfigError, match=">= 1"):
        ensemble_size({"trainer": {"ensemble": 0}})


@pytest.mark.slow
def test_fit_trains_members_and_test_scores_their_average(tmp_path: Path) -> None:
    result = fit(RECIPE, out=tmp_path / "run", verbose=False)
    members = [load_weights(weights_path(tmp_path / "run" / "members" / str(k))) for k in range(2)]
    first, second = (dict(m.named_parameters()) for m in members)
    assert any(not torch.equal(first[n], second[n]) for n in first)  # different seeds, different members
    assert {"member0/val/acc", "member1/val/acc", "members/val/acc", "val/acc", "test/acc"} <= set(result.metrics)

    # Reference: each member's softmax on the test split, averaged by hand.
    bundle = load_dataset("toy:a", n_train=30, n_test=8)
    batch = bundle.collate_fn([bundle.test[i] for i in range(len(bundle.test))])
    with torch.no_grad():
        probs = torch.stack([m(x=batch["x"], lengths=batch.get("lengths")).softmax(-1) for m in members]).mean(0)
    assert result.metrics["test/acc"] == pytest.approx(float((probs.argmax(1) == batch["y"]).float().mean()))
    assert result.metrics["test/loss"] == pytest.approx(float(F.nll_loss(probs.log(), batch["y"])), rel=1e-5)
    again = evaluate_run(tmp_path / "run").metrics  # `cnnlstm test --run` rebuilds the ensemble from its members
    assert again["test/acc"] == result.metrics["test/acc"]
    assert again["test/loss"] == pytest.approx(result.metrics["test/loss"], rel=1e-6)


def _series_recipe(tmp_path: Path) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    x = (rng.normal(size=(24, 12, 2)) + y[:, None, None]).astype(np.float32)
    data = tmp_path / "series.npz"
    np.savez(data, X_train=x[:16], y_train=y[:16], X_test=x[16:], y_test=y[16:])
    return {**RECIPE, "data": {"spec": f"npz:{data}", "batch_size": 8},
            "model": {"name": "lstm_fcn", "hidden_size": 4, "filters": [4, 4, 4], "kernel_sizes": [3, 3, 3]}}


@pytest.mark.slow
def test_an_ensemble_run_exports_as_one_graph_that_predicts_like_the_eager_ensemble(tmp_path: Path) -> None:
    import numpy as np

    from cnnlstm.engine.ensemble import load_run_model
    from cnnlstm.engine.predict import predict
    from cnnlstm.engine.rundir import read_config
    from cnnlstm.export import export_run
    from cnnlstm.export.predictor import predict_onnx

    recipe = _series_recipe(tmp_path)
    x = np.load(tmp_path / "series.npz")["X_test"]
    run = fit(recipe, out=tmp_path / "run", verbose=False).run_dir
    report, script = export_run(run, formats=("onnx", "torchscript"))
    assert report.parity.passed and script.parity.passed, report.summary() + script.summary()

    # The eager reference: both members' softmax, averaged by hand, on the held-out series.
    members = [load_weights(weights_path(run / "members" / str(k))) for k in range(2)]
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, X=x)
    with torch.no_grad():
        probs = torch.stack([m(x=torch.from_numpy(x)).softmax(-1) for m in members]).mean(0)
    onnx_rows = predict_onnx(run, [str(inputs)], report.path)
    eager_rows = predict(run, [str(inputs)])
    assert isinstance(load_run_model(run, read_config(run)), EnsembleClassifier)
    for row, eager, want in zip(onnx_rows, eager_rows, probs, strict=True):
        assert row["label"] == eager["label"]
        assert row["probability"] == pytest.approx(float(want.max()), abs=1e-5)
        assert eager["probability"] == pytest.approx(float(want.max()), abs=1e-5)


@pytest.mark.slow
def test_members_trained_in_parallel_processes_equal_the_sequential_ones(tmp_path: Path) -> None:
    recipe = _series_recipe(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference in one thread, as each of the two workers gets one
    try:
        sequential = fit(recipe, out=tmp_path / "seq", verbose=False)
        parallel = fit({**recipe, "trainer": {**recipe["trainer"], "ensemble_jobs": 2}}, out=tmp_path / "par",
                       verbose=False)
    finally:
        torch.set_num_threads(threads)
    for k in range(2):
        a = load_weights(weights_path(tmp_path / "seq" / "members" / str(k))).state_dict()
        b = load_weights(weights_path(tmp_path / "par" / "members" / str(k))).state_dict()
        assert all(torch.equal(a[n], b[n]) for n in a), f"member {k} differs"
    assert parallel.metrics["test/acc"] == sequential.metrics["test/acc"]
    assert parallel.metrics["member1/val/loss"] == sequential.metrics["member1/val/loss"]


def test_ensemble_jobs_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="ensemble_jobs must be >= 1"):
        fit({**RECIPE, "trainer": {**RECIPE["trainer"], "ensemble_jobs": 0}}, verbose=False)


@pytest.mark.slow
def test_members_of_different_families_are_averaged_like_seed_members(tmp_path: Path) -> None:
    from cnnlstm.engine.ensemble import load_run_model
    from cnnlstm.engine.rundir import read_config
    from cnnlstm.export import export_run

    recipe = _series_recipe(tmp_path)
    small = {"hidden_size": 4}
    recipe["trainer"] = {**recipe["trainer"], "ensemble": None, "ensemble_models": [
        {"name": "lstm_fcn", "filters": [4, 4, 4], "kernel_sizes": [3, 3, 3], **small},
        {"name": "deep_conv_lstm", "filters": 4, "num_conv_layers": 2, **small}]}
    result = fit(recipe, out=tmp_path / "run", verbose=False)
    run = result.run_dir
    members = [load_weights(weights_path(run / "members" / str(k))) for k in range(2)]
    assert [m.model_name for m in members] == ["lstm_fcn", "deep_conv_lstm"]  # one member per entry, in order
    ensemble = load_run_model(run, read_config(run))
    assert ensemble.model_name == "ensemble of 2 lstm_fcn, deep_conv_lstm"
    bundle = load_dataset(recipe["data"]["spec"])
    batch = bundle.collate_fn([bundle.test[i] for i in range(len(bundle.test))])
    with torch.no_grad():
        probs = torch.stack([m(x=batch["x"]).softmax(-1) for m in members]).mean(0)
    assert result.metrics["test/acc"] == pytest.approx(float((probs.argmax(1) == batch["y"]).float().mean()))
    (report,) = export_run(run, formats=("onnx",))
    assert report.parity.passed, report.summary()


def test_ensemble_models_are_checked_before_training() -> None:
    with pytest.raises(ConfigError, match="ensemble_models must be a non-empty list"):
        fit({**RECIPE, "trainer": {**RECIPE["trainer"], "ensemble_models": [{"hidden_size": 4}]}}, verbose=False)
    with pytest.raises(ConfigError, match="needs an ensemble of 2 or more"):
        fit({**RECIPE, "trainer": {**RECIPE["trainer"], "ensemble": 1, "ensemble_models": ["toy_lstm"]}},
            verbose=False)


def test_callbacks_with_an_ensemble_are_refused_not_dropped(tmp_path) -> None:
    import lightning.pytorch as pl

    with pytest.raises(ConfigError, match="callbacks observe one Trainer"):
        fit(RECIPE, out=tmp_path / "run", verbose=False, callbacks=[pl.Callback()])
    assert not (tmp_path / "run" / "members").exists()  # refused before any member trained


@pytest.mark.slow
def test_an_unguarded_script_with_parallel_members_says_to_guard_its_calls(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    recipe = {**_series_recipe(tmp_path), "trainer": {**RECIPE["trainer"], "ensemble_jobs": 2}}
    script = tmp_path / "train.py"  # fit() at the top level: each spawned worker imports this file again
    script.write_text("import json\nfrom cnnlstm.engine import fit\n"
                      f"fit(json.loads({json.dumps(recipe)!r}), out={str(tmp_path / 'run')!r}, verbose=False)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert 'if __name__ == "__main__":' in done.stderr and "trainer.ensemble_jobs: 1" in done.stderr
    guarded = tmp_path / "guarded.py"  # the same call under the guard trains
    guarded.write_text("import json\nfrom cnnlstm.engine import fit\nif __name__ == '__main__':\n"
                       f"    fit(json.loads({json.dumps(recipe)!r}), out={str(tmp_path / 'ok')!r}, verbose=False)\n")
    done = subprocess.run([sys.executable, str(guarded)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "ok" / "members" / "1" / "metrics.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process parents from /proc (Linux)")
def test_member_processes_end_when_the_fit_that_started_them_is_killed(tmp_path: Path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    def children(pid: int) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
        return found

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    recipe = {**_series_recipe(tmp_path), "trainer": {**RECIPE["trainer"], "ensemble_jobs": 2, "max_epochs": 100_000}}
    script = tmp_path / "train.py"  # members that would train for hours
    script.write_text("import json\nfrom cnnlstm.engine import fit\nif __name__ == '__main__':\n"
                      f"    fit(json.loads({json.dumps(recipe)!r}), out={str(tmp_path / 'run')!r}, verbose=False)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not all((tmp_path / "run" / "members" / str(k) / "logs").is_dir() for k in range(2)):
            assert time.monotonic() < deadline and parent.poll() is None, "the members never started"
            time.sleep(0.5)
        workers = [pid for pid in children(parent.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(workers) == 2, workers
        parent.send_signal(signal.SIGKILL)  # killed outright: nothing of the parent's own code runs
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not any(alive(pid) for pid in workers), "member processes trained on after their fit was killed"
    finally:
        parent.kill()
        for pid in workers + children(parent.pid):  # never leave an orphan behind, whatever failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
