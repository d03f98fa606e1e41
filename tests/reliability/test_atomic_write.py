"""An interrupted write never leaves a truncated file under the final name.

Two kinds of interruption: an exception raised while the data is being written (in-process), and a writer
process killed with SIGKILL halfway through its bytes (no ``finally`` runs, no cleanup). In both, the final
path must hold either its previous complete content or nothing.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cnnlstm._io import atomic_write
from cnnlstm.engine.rundir import load_weights, save_weights, write_json
from cnnlstm.models import create_model


class _Boom(Exception):
    pass


def test_exception_mid_write_keeps_the_old_file_and_removes_the_temp(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    target = atomic_write(tmp_path / "metrics.json", '{"old": true}\n')
    real_fdopen = os.fdopen

    class HalfWriter:
        """Writes half the bytes, then fails: a full disk, a signal turned into an exception."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data: bytes) -> int:
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise _Boom

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(_Boom):
        atomic_write(target, '{"new": "' + "x" * 10_000 + '"}\n')
    assert target.read_text() == '{"old": true}\n'
    with pytest.raises(_Boom):
        atomic_write(tmp_path / "new.json", "{}")  # a first write that fails leaves no file at all
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_unserialisable_data_never_touches_the_file(tmp_path: Path) -> None:
    target = write_json(tmp_path / "history.json", [{"epoch": 1}])
    with pytest.raises(TypeError):
        write_json(target, [{"epoch": object()}])  # json.dumps fails before any byte is written
    assert target.read_text() == '[\n  {\n    "epoch": 1\n  }\n]\n'
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]


def test_save_weights_interrupted_mid_serialisation_keeps_the_previous_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnlstm.engine.rundir as rundir

    model = create_model("lstm_fcn", num_classes=2, in_channels=2, hidden_size=4, filters=(4, 4, 4))
    path = save_weights(model, tmp_path / "best.safetensors")
    before = path.read_bytes()
    real_save = rundir.save_model

    def failing_save(module, filename, metadata=None):  # writes a real but truncated file, then fails
        real_save(module, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise _Boom

    monkeypatch.setattr(rundir, "save_model", failing_save)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(_Boom):
        save_weights(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]
    load_weights(path)  # still a complete, loadable file


# The child runs the library's own atomic_write (its source, exec'd), so it starts in milliseconds instead of
# importing torch and Lightning through cnnlstm.engine; the function uses only os, tempfile and pathlib.
WRITER = textwrap.dedent("""
    import os, sys, tempfile, time
    from pathlib import Path
    real_fdopen = os.fdopen

    class Slow:
        def __init__(self, f): self.f = f
        def __enter__(self): return self
        def __exit__(self, *exc): self.f.close()
        def write(self, data):
            self.f.write(data[: len(data) // 2]); self.f.flush()
            print("half", flush=True)
            time.sleep(60)  # killed here, half of the bytes on disk

    os.fdopen = lambda fd, mode: Slow(real_fdopen(fd, mode))
    exec(sys.argv[2])
    atomic_write(sys.argv[1], "new " * 100_000)
""")
SOURCE = textwrap.dedent(inspect.getsource(atomic_write))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.slow
def test_a_writer_killed_halfway_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("old: 1\n")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), SOURCE], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "half"
        temps = [p for p in tmp_path.iterdir() if p.name != "config.yaml"]
        assert len(temps) == 1 and temps[0].stat().st_size == 200_000  # half of the 400_000 bytes are written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert target.read_text() == "old: 1\n"
    # A killed process cannot clean up: its hidden temp file (.config.yaml.*.tmp) stays, never the final name.
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "config.yaml"]
    assert all(name.startswith(".config.yaml.") and name.endswith(".tmp") for name in leftovers)
