"""The output rule (``cnnlstm.engine.outputs``): no command writes over its inputs, into a run it did not create,
or over an existing run without ``--overwrite``; output paths are refused before any work starts.

Every CLI case hashes the inputs and the run directory before and after: a refused command changes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from reliability_helpers import TINY_FIT, assert_usage_error, run_cli, tree_hashes

from cnnlstm.engine.outputs import (
    LOCK_NAME,
    check_new_run,
    check_output_dir,
    check_output_file,
    clear_run,
    enclosing_run,
    is_run_dir,
    run_lock,
)
from cnnlstm.errors import ConfigError

UNWRITABLE = Path("/sys/cnnlstm-probe/out.csv")  # sysfs refuses new files even to root


def _fake_run(folder: Path) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("name: x\n")
    (folder / "metrics.json").write_text("{}\n")
    return folder


# -- the rule itself ----------------------------------------------------------------------------------------------
def test_output_file_refusals(tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    data.write_bytes(b"x")
    run = _fake_run(tmp_path / "run")
    with pytest.raises(ConfigError, match="is also an input"):
        check_output_file(data, flag="--csv", inputs=[data])
    with pytest.raises(ConfigError, match="is also an input"):  # the same file under another spelling
        check_output_file(tmp_path / "." / "data.npz", flag="--csv", inputs=[str(data)])
    with pytest.raises(ConfigError, match=f"inside run directory {run}"):
        check_output_file(run / "config.yaml", flag="--csv")
    with pytest.raises(ConfigError, match=f"inside run directory {run}"):
        check_output_file(run / "new" / "p.csv", flag="--csv")
    with pytest.raises(ConfigError, match="is a folder; name a file, e.g."):
        check_output_file(tmp_path, flag="--csv")
    with pytest.raises(ConfigError, match=f"{data} is a file, not a folder"):
        check_output_file(data / "sub" / "p.csv", flag="--csv")
    if UNWRITABLE.parent.parent.is_dir():
        with pytest.raises(ConfigError, match="cannot create files in /sys"):
            check_output_file(UNWRITABLE, flag="--csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "run"]  # the checks created nothing


def test_output_file_accepts_new_and_earlier_outputs(tmp_path: Path) -> None:
    assert check_output_file(tmp_path / "a" / "b" / "p.csv", flag="--csv") == tmp_path / "a" / "b" / "p.csv"
    (tmp_path / "p.csv").write_text("old predictions\n")
    assert check_output_file(tmp_path / "p.csv", flag="--csv", inputs=[tmp_path / "other.npz"]) == tmp_path / "p.csv"
    run = _fake_run(tmp_path / "run")
    assert check_output_dir(run / "export", flag="--out", allowed_in=run / "export") == run / "export"
    assert not (tmp_path / "a").exists()


def test_run_detection(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    assert is_run_dir(run) and not is_run_dir(tmp_path)
    assert enclosing_run(run / "checkpoints" / "best.ckpt") == run
    assert enclosing_run(tmp_path / "elsewhere.csv") is None


def test_new_run_refusals(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a finished run.*--resume.*--overwrite.*another --out"):
        check_new_run(run)
    (run / "metrics.json").unlink()
    with pytest.raises(ConfigError, match="an unfinished run; continue it with `cnnlstm fit --resume"):
        check_new_run(run)
    assert check_new_run(run, overwrite=True) == run
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="already holds files \\(notes.txt\\)"):
        check_new_run(tmp_path / "mine")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_new_run(tmp_path / "mine" / "notes.txt")
    with pytest.raises(ConfigError, match="inside run directory"):
        check_new_run(run / "nested")
    (tmp_path / "empty").mkdir()
    assert check_new_run(tmp_path / "empty") == tmp_path / "empty"


def test_clear_run_removes_only_what_fit_writes(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run")
    (run / "logs").mkdir()
    (run / "logs" / "metrics.csv").write_text("epoch\n")
    (run / "notes.txt").write_text("mine")
    (run / "members" / "0" / "checkpoints").mkdir(parents=True)  # an ensemble's members and weights
    (run / "ensemble_weights.json").write_text("{}\n")
    clear_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    (run / "logs").mkdir()  # a folder that holds no run: its logs/ is the user's
    clear_run(run)
    assert (run / "logs").is_dir()


def test_lock_refuses_a_second_writer_and_cleans_up(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with run_lock(run):
        assert (run / LOCK_NAME).read_text() == str(os.getpid())
        with pytest.raises(ConfigError, match=f"being written by another cnnlstm process \\(pid {os.getpid()}\\)"):
            with run_lock(run):
                pass
        assert (run / LOCK_NAME).is_file()  # the refused writer did not remove the holder's lock
    assert not run.exists()  # created by the lock, left empty: removed
    run.mkdir()
    (run / "config.yaml").write_text("x")
    with run_lock(run):
        pass
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


@pytest.mark.slow
def test_a_killed_writer_does_not_block_the_next_one(tmp_path: Path) -> None:
    """flock is dropped by the kernel when the holder dies: SIGKILL never leaves a run locked for --resume."""
    run = tmp_path / "run"
    src = Path(__file__).parents[2] / "src" / "cnnlstm"
    # The two modules loaded by path: importing the cnnlstm package (torch, Lightning) would cost seconds.
    code = textwrap.dedent(f"""
        import importlib.util, os, signal, sys
        def load(name, path):
            spec = importlib.util.spec_from_file_location(name, path)
            module = sys.modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        load("cnnlstm.errors", {str(src / "errors.py")!r})
        run_lock = load("outputs", {str(src / "engine" / "outputs.py")!r}).run_lock
        with run_lock({str(run)!r}):
            open({str(tmp_path / 'held')!r}, 'w').close()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert result.returncode == -9 and (tmp_path / "held").exists(), result.stderr[-2000:]
    assert (run / LOCK_NAME).is_file()  # the file stays behind, the lock does not
    with run_lock(run):
        pass


# -- through the CLI ------------------------------------------------------------------------------------------------
def test_fit_into_a_finished_run_is_refused_and_changes_nothing(tiny_run: Path, tiny_npz: Path) -> None:
    before = tree_hashes(tiny_run, tiny_npz)
    result = run_cli(["fit", "--recipe", "basic_motions", "--data", f"npz:{tiny_npz}", *TINY_FIT,
                      "--out", str(tiny_run)])
    assert_usage_error(result, "already holds a finished run", f"cnnlstm fit --resume {tiny_run}", "--overwrite")
    assert tree_hashes(tiny_run, tiny_npz) == before


@pytest.mark.slow
def test_fit_overwrite_replaces_the_run_and_keeps_other_files(tmp_path: Path, tiny_run: Path, tiny_npz: Path) -> None:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)  # a finished run of the same command
    argv = ["fit", "--recipe", "basic_motions", "--data", f"npz:{tiny_npz}", *TINY_FIT, "--out", str(out)]
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "stale.ckpt").write_bytes(b"old")
    assert run_cli([*argv, "--set", "seed=1"]).code == 2
    result = run_cli([*argv, "--overwrite", "--set", "seed=1"])
    assert result.code == 0, result.err[-1500:]
    assert "seed: 1" in (out / "config.yaml").read_text()
    assert (out / "notes.txt").read_text() == "mine" and not (out / "checkpoints" / "stale.ckpt").exists()
    assert not (out / LOCK_NAME).exists()


def test_a_second_fit_into_a_locked_run_is_refused(tmp_path: Path, tiny_npz: Path) -> None:
    out = tmp_path / "run"
    argv = ["fit", "--recipe", "basic_motions", "--data", f"npz:{tiny_npz}", *TINY_FIT, "--out", str(out)]
    with run_lock(out):  # what a running fit holds
        assert_usage_error(run_cli(argv), "being written by another cnnlstm process", "choose another --out")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
        (out / "config.yaml").write_text("name: x\n")  # the running fit got as far as starting its run
        assert_usage_error(run_cli(argv), "being written by another cnnlstm process")
        assert_usage_error(run_cli(["fit", "--resume", str(out)]), "--resume", "being written by another")


def test_predict_output_paths(tiny_run: Path, tiny_npz: Path, tmp_path: Path) -> None:
    before = tree_hashes(tiny_run, tiny_npz)
    (tmp_path / "a_file").write_text("x")
    cases = {
        str(tiny_npz): "is also an input",
        str(tiny_run / "config.yaml"): "inside run directory",
        str(tiny_run / "predictions.csv"): "inside run directory",
        str(tmp_path): "is a folder",
        str(tmp_path / "a_file" / "p.csv"): "is a file, not a folder",
    }
    if UNWRITABLE.parent.parent.is_dir():
        cases[str(UNWRITABLE)] = "cannot create files in /sys"
    for csv, fragment in cases.items():
        result = run_cli(["predict", "--run", str(tiny_run), str(tiny_npz), "--csv", csv])
        assert_usage_error(result, f"--csv {csv}", fragment)
    assert tree_hashes(tiny_run, tiny_npz) == before
    result = run_cli(["predict", "--run", str(tiny_run), str(tiny_npz), "--csv", str(tmp_path / "out" / "p.csv")])
    assert result.code == 0 and (tmp_path / "out" / "p.csv").read_text().startswith("input,label")


def test_export_out_inside_a_run_or_on_a_file(tiny_run: Path, tiny_npz: Path, tmp_path: Path) -> None:
    before = tree_hashes(tiny_run, tiny_npz)
    assert_usage_error(run_cli(["export", "--run", str(tiny_run), "--out", str(tiny_run)]), "inside run directory")
    assert_usage_error(run_cli(["export", "--run", str(tiny_run), "--out", str(tiny_run / "checkpoints")]),
                       "inside run directory")
    assert_usage_error(run_cli(["export", "--run", str(tiny_run), "--out", str(tiny_npz)]), "is a file")
    assert tree_hashes(tiny_run, tiny_npz) == before


@pytest.mark.slow
def test_summary_plot_goes_where_it_says(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    base = ["summary", "--recipe", "basic_motions", "--seq-len", "8"]
    assert_usage_error(run_cli([*base, "--plot", str(tmp_path / "folder")]), "is a folder", "cost.png")
    assert list((tmp_path / "folder").iterdir()) == []
    result = run_cli([*base, "--plot", str(tmp_path / "curves")])
    assert result.code == 0, result.err[-1000:]
    assert f"wrote {tmp_path / 'curves.png'}" in result.out and (tmp_path / "curves.png").is_file()


def test_tune_storage_and_out_are_checked_before_the_study_opens(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    base = ["tune", "--recipe", "basic_motions", "--trials", "1"]
    result = run_cli([*base, "--storage", f"sqlite:///{tmp_path}/a_file/study.db", "--out", str(tmp_path / "t")])
    assert_usage_error(result, "--storage", "a_file is a file, not a folder")
    assert_usage_error(run_cli([*base, "--out", str(tmp_path / "a_file")]), "--out", "is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_predict_series_run_given_a_folder_says_it_is_a_folder(tiny_run: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    clip.mkdir()
    assert_usage_error(run_cli(["predict", "--run", str(tiny_run), str(clip)]), "is a folder", ".npz or .ts")


def test_unwritable_csv_names_the_file_not_a_temp_file(tmp_path: Path) -> None:
    """Past the early check (a disk that fills up, a folder made read-only meanwhile), atomic_write's error names
    the user's file."""
    from cnnlstm._io import atomic_write

    if not UNWRITABLE.parent.parent.is_dir():
        pytest.skip("no /sys here")
    with pytest.raises(OSError) as info:
        atomic_write(Path("/sys") / "p.csv", "x")
    assert info.value.filename == "/sys/p.csv"




def test_a_write_failing_after_the_checks_names_the_file(tiny_run: Path, tiny_npz: Path, tmp_path: Path,
                                                          monkeypatch) -> None:
    """A disk that fills up between the early check and the write: one line naming the file, exit 2."""
    import errno

    import cnnlstm.engine.predict as predict_module

    csv = tmp_path / "p.csv"

    def disk_full(predictions, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(predict_module, "predictions_csv", disk_full)
    result = run_cli(["predict", "--run", str(tiny_run), str(tiny_npz), "--csv", str(csv)])
    assert_usage_error(result, f"cannot use {csv}", os.strerror(errno.ENOSPC))
