"""The GPU suite's code paths, checked on the CPU with tiny sizes (CI has no GPU)."""

import json

from benchmarks.cli import main


def test_gpu_suite_runs_every_path_on_cpu(tmp_path):
    out = tmp_path / "results"
    assert main(["gpu", "--gpu-small", "--gpu-warmup", "0", "--gpu-steps", "1", "--gpu-repeats", "2",
                 "--gpu-variants", "--out", str(out), "--runs", str(tmp_path / "runs")]) == 0
    record = json.loads((out / "gpu.json").read_text())
    assert record["check_max_abs_diff"] < 1e-5  # folded frames == the per-frame loop, before anything is timed
    for paths in (record["frame_paths"], record["series_paths"]):
        for value in paths.values():
            assert len(value["rates"]) == 2 and all(r > 0 for r in value["rates"])
    assert "cnnlstm engine, bf16-mixed + channels_last" in record["frame_paths"]
    # --gpu-variants: the NHWC-input and larger-batch engine paths, and a profile of each kind of step
    assert {"cnnlstm engine, bf16-mixed + channels_last, NHWC input",
            "cnnlstm engine, bf16-mixed + channels_last, batch 4"} <= set(record["frame_paths"])
    for name in ("engine", "hand loop"):
        assert record["profiles"][name].startswith("host time per step") and "Self CPU" in record["profiles"][name]
    text = (out / "gpu.md").read_text()
    assert "x per-frame loop" in text and "Command: `python -m benchmarks gpu" in text
