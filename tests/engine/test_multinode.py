"""Two "nodes" of one process each, through Lightning's DDP on loopback (gloo): a lost node stops the other
cleanly, and ``fit --resume`` on both finishes the run.

Each node is started by hand, as on a cluster: the same command with ``MASTER_ADDR``, ``MASTER_PORT``,
``NODE_RANK`` and ``WORLD_SIZE`` set and ``trainer.num_nodes=2``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnlstm.engine import evaluate_run

pytestmark = pytest.mark.slow

ENGINE_TESTS = str(Path(__file__).resolve().parent)
CLI = f"import sys; sys.path.insert(0, {ENGINE_TESTS!r}); import toys\nfrom cnnlstm.cli import main; sys.exit(main())"
TOY = str(Path(ENGINE_TESTS) / "toy.yaml")
NODES = ["trainer.num_nodes=2", "trainer.devices=1", "trainer.strategy=ddp", "trainer.accelerator=cpu",
         "trainer.enable_progress_bar=false"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(args: list[str], log_dir: Path, tag: str) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(rank),
               "WORLD_SIZE": "2", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
        env.pop("CNNLSTM_RUN_DIR", None)
        log = open(log_dir / f"{tag}{rank}.log", "w")  # noqa: SIM115 - closed with the process below
        procs.append(subprocess.Popen([sys.executable, "-c", CLI, *args], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, text=True))
        log.close()
    return procs


def test_a_lost_node_stops_the_other_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    settings = [*NODES, "trainer.max_epochs=3", "data.options.n_train=3000", "early_stopping.enabled=false"]
    node0, node1 = _nodes(["fit", "--recipe", TOY, "--out", str(out), "--set", *settings], tmp_path, "fit")
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline and node0.poll() is None:
        time.sleep(0.2)
    assert (out / "checkpoints" / "last.ckpt").is_file(), (tmp_path / "fit0.log").read_text()[-3000:]
    time.sleep(1.0)  # into the second epoch
    node1.send_signal(signal.SIGKILL)
    node1.wait()
    killed_at = time.monotonic()
    node0.wait(timeout=120)  # a dead peer is seen at the next collective, not after a 30-minute timeout
    stopped_after = time.monotonic() - killed_at
    log = (tmp_path / "fit0.log").read_text()
    assert node0.returncode == 2, log[-3000:]
    last_line = log.strip().splitlines()[-1]
    assert last_line.startswith("cnnlstm: error: rank 0 of 2 lost another training process"), last_line
    assert f"cnnlstm fit --resume {out}" in last_line
    assert stopped_after < 60, stopped_after
    assert not (out / "metrics.json").exists()  # the run is unfinished, not reported

    procs = _nodes(["fit", "--resume", str(out)], tmp_path, "resume")
    for rank, proc in enumerate(procs):
        proc.wait(timeout=300)
        assert proc.returncode == 0, (tmp_path / f"resume{rank}.log").read_text()[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert metrics["epochs"] == 3 and [row["epoch"] for row in history] == [1, 2, 3]
    assert (tmp_path / "resume0.log").read_text().count("test accuracy") == 1  # rank 0 alone reports
    again = evaluate_run(out).metrics  # one process, every test sample once: the same figures
    assert again["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert again["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-5)


def test_ddp_timeout_is_checked(tmp_path: Path, capsys) -> None:
    from cnnlstm.cli import main

    assert main(["fit", "--recipe", TOY, "--out", str(tmp_path / "r"), "--set", "trainer.strategy=ddp",
                 "trainer.ddp_timeout=0"]) == 2
    assert capsys.readouterr().err.strip() == "cnnlstm: error: trainer.ddp_timeout must be > 0 seconds, got 0"
