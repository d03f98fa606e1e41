"""The cnnlstm command: every recipe end to end (tiny), test reproduction, predict, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnlstm.cli import main
from cnnlstm.models import list_models

FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
        "data.batch_size=4"]
RECIPES = {
    "basic_motions": ["model.hidden_size=4", "model.filters=[4,8,4]"],
    "gunpoint": ["model.hidden_size=4", "model.filters=4"],
    "captcha_crnn": ["data.options.n_train=16", "data.options.n_test=4", "model.hidden_size=4",
                     "model.widths=[4,4,8,8,8,8]"],
    "shape_captions": ["data.options.n_train=16", "data.options.n_test=4", "data.options.image_size=32",
                       "data.options.object_size=8", "model.hidden_size=8", "model.encoder_kwargs.widths=[4,8]"],
    "digit_sequences": ["data.options.n_train=24", "data.val_fraction=0.25", "data.options.n_test=4",
                        "pretrain.trainer.max_epochs=1",
                        "pretrain.trainer.limit_train_batches=2", "pretrain.data.options.n_train=60",
                        "pretrain.data.options.n_test=10", "pretrain.trainer.enable_progress_bar=false"],
    "sort_of_clevr": ["data.options.n_train=300", "data.options.n_test=8", "model.hidden_size=8",
                      "model.encoder_kwargs.widths=[4,8]", "trainer.limit_val_batches=2"],
    "moving_digits": ["data.options.n_train=8", "data.options.n_test=4", "model.hidden_size=4"],
    "ucr": ["model.hidden_size=4", "model.filters=[4,8,4]"],
}
SLOW_RECIPES = {"sort_of_clevr", "ucr"}  # over 5 s each on a shared 2-core machine
TOY = ["--recipe", str(Path(__file__).resolve().parents[1] / "engine" / "toy.yaml")]


def _model_of(recipe: str) -> str:
    from cnnlstm.engine import load_recipe

    return load_recipe(recipe)["model"]["name"]


def test_every_shipped_recipe_names_a_registered_model() -> None:
    from cnnlstm.engine.recipe import list_recipes

    missing = {r: _model_of(r) for r in list_recipes() if _model_of(r) not in list_models()}
    assert not missing, f"recipes naming models that are not registered: {missing}"


@pytest.mark.parametrize("recipe", [pytest.param(r, marks=pytest.mark.slow) if r in SLOW_RECIPES else r
                                    for r in sorted(RECIPES)])
def test_recipe_fits_and_test_reproduces(recipe: str, tmp_path: Path, capsys) -> None:
    assert _model_of(recipe) in list_models(), f"recipe {recipe} names model {_model_of(recipe)}, not registered"
    out = tmp_path / recipe
    assert main(["fit", "--recipe", recipe, "--out", str(out), "--set", *FAST, *RECIPES[recipe]]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert any(k.startswith("test/") for k in metrics)
    assert (out / "config.yaml").is_file()
    members = int(metrics.get("ensemble") or 1)  # an ensemble recipe (ucr) keeps each member's weights
    weights = ["checkpoints/best.safetensors"] if members == 1 else [f"members/{k}/checkpoints/best.safetensors"
                                                                      for k in range(members)]
    assert all((out / w).is_file() for w in weights), weights
    if recipe == "digit_sequences":  # stage two reads frames as stage one trained the encoder: unnormalised
        normalization = json.loads((out / "data_info.json").read_text())["normalization"]
        assert (normalization["mean"], normalization["std"]) == ([0.0], [1.0])
    capsys.readouterr()
    assert main(["test", "--run", str(out)]) == 0
    printed = dict(item.split("=") for item in capsys.readouterr().out.split())
    for key, value in printed.items():
        assert float(value) == pytest.approx(metrics[key], abs=5e-5), key


def test_predict_prints_and_writes_csv(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["fit", *TOY, "--out", str(out), "--set", *FAST]) == 0
    from toys import make_series

    x, _ = make_series(4, seed=7)
    np.savez(tmp_path / "new.npz", X=x)
    capsys.readouterr()
    assert main(["predict", "--run", str(out), str(tmp_path / "new.npz")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith(f"{tmp_path / 'new.npz'}[0]\t")
    assert main(["predict", "--run", str(out), str(tmp_path / "new.npz"), "--csv", str(tmp_path / "p.csv")]) == 0
    rows = (tmp_path / "p.csv").read_text().strip().splitlines()
    assert rows[0] == "input,label,probability,p_0,p_1,p_2" and len(rows) == 5
    probs = np.array([[float(v) for v in r.split(",")[3:]] for r in rows[1:]])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_lists(capsys) -> None:
    for command, expected in (("models", "lstm_fcn"), ("datasets", "builtin:digits"), ("recipes", "basic_motions")):
        assert main([command]) == 0
        assert expected in capsys.readouterr().out


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err and len(err.splitlines()) == 1, err
    return err


def test_bad_inputs_give_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data:\n  spec: [unclosed\n")
    mismatch = tmp_path / "mismatch.npz"
    np.savez(mismatch, X=np.zeros((6, 5, 2)), y=np.zeros(5))
    nan = tmp_path / "nan.npz"
    x = np.random.default_rng(0).normal(size=(10, 5, 2))
    with_nan = x.copy()
    with_nan[3, 2, 1] = np.nan
    np.savez(nan, X=with_nan, y=np.arange(10) % 2)
    unseen = tmp_path / "unseen.npz"
    np.savez(unseen, X_train=x[:6], y_train=np.arange(6) % 2, X_test=x[6:], y_test=np.array([0, 1, 2, 1]))
    fit = ["fit", "--out", str(tmp_path / "r")]
    cases = {
        "did you mean 'basic_motions'": fit + ["--recipe", "basic_motoins"],
        "unknown model 'lstm_fnc'": fit + ["--recipe", "basic_motions", "--set", "model.name=lstm_fnc"],
        "unknown built-in dataset 'digitz'": fit + ["--recipe", "basic_motions", "--data", "builtin:digitz"],
        "malformed YAML": fit + ["--recipe", str(bad_yaml)],
        "did you mean 'trainer.max_epochs'": fit + ["--recipe", "basic_motions", "--set", "trainer.max_epoch=1"],
        "unknown recipe key 'optim.learning_rate'": fit + ["--recipe", "basic_motions", "--set",
                                                          "optim.learning_rate=1"],
        "not found": fit + ["--recipe", "basic_motions", "--data", f"npz:{tmp_path / 'missing.npz'}"],
        "6": fit + ["--recipe", "basic_motions", "--data", f"npz:{mismatch}"],
        "NaN": fit + ["--recipe", "basic_motions", "--data", f"npz:{nan}"],
        "(test) has no samples": fit + TOY + ["--set", "data.options.n_test=0"],
        "never occur in training": fit + ["--recipe", "basic_motions", "--data", f"npz:{unseen}"],
        "does not exist": ["test", "--run", str(tmp_path / "nowhere")],
    }
    for expected, argv in cases.items():
        assert expected in _error(argv, capsys), argv


@pytest.mark.slow
def test_console_script_runs_in_a_subprocess() -> None:
    exe = Path(sys.executable).with_name("cnnlstm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cnnlstm.cli"]
    done = subprocess.run([*cmd, "fit", "--recipe", "nope"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("cnnlstm: error: unknown recipe 'nope'")


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path: Path) -> None:
    """2-process DDP through Lightning: rank 0 alone writes the run, and test metrics count every sample once."""
    out = tmp_path / "ddp"
    engine_tests = str(Path(__file__).resolve().parents[1] / "engine")
    code = (f"import sys; sys.path.insert(0, {engine_tests!r}); import toys\n"
            "from cnnlstm.cli import main; sys.exit(main(sys.argv[1:]))")
    script = tmp_path / "run_cli.py"
    script.write_text(code)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("CNNLSTM_RUN_DIR", None)
    argv = [sys.executable, str(script), "fit", *TOY, "--out", str(out), "--set", *FAST,
            "data.options.n_test=13", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("test accuracy") == 1  # the summary comes from rank 0 only
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_samples"] == 13
    assert main(["test", "--run", str(out)]) == 0
    from cnnlstm.engine import evaluate_run

    single = evaluate_run(out).metrics
    assert single["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)  # 13 samples over 2 ranks, none twice
    assert single["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-5)


@pytest.mark.slow
def test_fit_on_a_frames_folder_without_a_recipe_uses_clips(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CNNLSTM_CACHE_DIR", str(tmp_path / "cache"))  # the frozen encoder's features go here
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from user_images import random_clips

    random_clips(tmp_path / "clips", labels=("left", "right"), clips=4)
    out = tmp_path / "run"
    assert main(["fit", "--data", f"frames:{tmp_path / 'clips'}", "--out", str(out), "--set", *FAST,
                 "data.options={num_frames: 2, size: 32}", "data.val_fraction=0.5", "model.hidden_size=4"]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["frame_features"] == "conv_lstm"
    assert config["model"]["encoder"] == "timm:tf_efficientnet_lite0"
    normalization = json.loads((out / "data_info.json").read_text())["normalization"]
    assert normalization["mean"] == [0.5] * 3 and "tf_efficientnet_lite0" in normalization["source"]
    capsys.readouterr()
    assert main(["fit", "--data", "npz:series.npz"]) == 2  # a source with no generic recipe of its own
    assert "needs --recipe" in capsys.readouterr().err


def test_repeated_set_flags_all_apply() -> None:
    # `--set a=1 --set b=2` used to keep only the last flag's overrides (argparse's default "store").
    import argparse

    from cnnlstm.cli import build_parser
    from cnnlstm.tune.cli import add_arguments

    args = build_parser().parse_args(["fit", "--recipe", "gunpoint", "--set", "trainer.ensemble=5",
                                      "--set", "trainer.max_epochs=3", "optim.lr=0.01"])
    assert args.overrides == ["trainer.ensemble=5", "trainer.max_epochs=3", "optim.lr=0.01"]
    again = build_parser().parse_args(["fit", "--recipe", "gunpoint"])
    assert again.overrides == []  # the default list is not the one extended before
    tune = add_arguments(argparse.ArgumentParser()).parse_args(["--recipe", "gunpoint", "--trials", "1", "--set", "a=1",
                                                                "--set", "b=2"])
    assert tune.overrides == ["a=1", "b=2"]


def test_fit_refit_set_trains_on_train_and_validation(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["fit", *TOY, "--out", str(out), "--set", "trainer.max_epochs=2", "trainer.refit=true"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weights"] == "refit" and metrics["refit/epochs"] == metrics["best_epoch"]
    assert (out / "refit" / "history.json").is_file()
    assert "refit on train + validation" in capsys.readouterr().out
    assert main(["fit", "--resume", str(out)]) == 2  # one line: refit runs are fitted again, not resumed
    assert "resuming one is not supported" in capsys.readouterr().err
    assert main(["fit", *TOY, "--out", str(tmp_path / "p"), "--set", "trainer.refit=true",
                 "optim.scheduler=plateau"]) == 2
    assert "no validation loss" in capsys.readouterr().err


def test_fit_ensemble_flag_trains_the_members(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["fit", *TOY, "--ensemble", "2", "--out", str(out), "--set", "trainer.max_epochs=1"]) == 0
    assert sorted(p.name for p in (out / "members").iterdir()) == ["0", "1"]
    assert yaml.safe_load((out / "config.yaml").read_text())["trainer"]["ensemble"] == 2
    assert "test accuracy:" in capsys.readouterr().out
    assert main(["fit", "--resume", str(out), "--ensemble", "3"]) == 2  # a resumed run keeps its own config
