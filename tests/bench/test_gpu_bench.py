"""The GPU suite's code paths, checked on the CPU with tiny sizes (CI has no GPU)."""

import json
from pathlib import Path

from benchmarks.cli import main

#: the anchor script's model class and top level as written there (the suite must read the class without running
#: the top level, which here would fail at once)
ANCHOR_STANDIN = """
import torch, torch.nn as nn
import timm

class LRCN(nn.Module):
    def __init__(self, folded=True, n_cls=101, hidden=512):
        super().__init__()
        self.cnn = timm.create_model('tf_efficientnet_lite0', pretrained=False, num_classes=0)
        self.lstm = nn.LSTM(self.cnn.num_features, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, n_cls)
        self.folded = folded
    def encode(self, x):
        b, t = x.shape[:2]
        return self.cnn(x.flatten(0, 1)).view(b, t, -1)
    def forward(self, x):
        h, _ = self.lstm(self.encode(x))
        return self.fc(h[:, -1])

raise SystemExit("the top level ran")
"""


def test_gpu_suite_runs_every_path_on_cpu(tmp_path):
    out = tmp_path / "results"
    anchor = Path(__file__).parents[2] / ".." / "shared" / "anchors" / "gpu_reference.py"
    if not anchor.is_file():  # a checkout without the shared anchors: the same class, written as that script has it
        anchor = tmp_path / "gpu_reference.py"
        anchor.write_text(ANCHOR_STANDIN)
    assert main(["gpu", "--gpu-small", "--gpu-warmup", "0", "--gpu-steps", "1", "--gpu-repeats", "2",
                 "--gpu-variants", "--gpu-anchor", str(anchor), "--out", str(out),
                 "--runs", str(tmp_path / "runs")]) == 0
    record = json.loads((out / "gpu.json").read_text())
    assert record["check_max_abs_diff"] < 1e-5  # folded frames == the per-frame loop, before anything is timed
    for paths in (record["frame_paths"], record["series_paths"]):
        for value in paths.values():
            assert len(value["rates"]) == 2 and all(r > 0 for r in value["rates"])
    assert "cnnlstm engine, bf16-mixed + channels_last" in record["frame_paths"]
    # --gpu-variants: the NHWC-input and larger-batch engine paths, and a profile of each kind of step
    assert {"cnnlstm engine, bf16-mixed + channels_last + cuda_graphs, NHWC input",
            "cnnlstm engine, bf16-mixed + channels_last, batch 4",
            "cnnlstm engine, bf16-mixed + channels_last + cuda_graphs, batch 4",
            "cnnlstm engine, bf16-mixed + channels_last + cuda_graphs",
            "anchor script's model and step (bf16 autocast + channels_last, NHWC input), these windows",
            } <= set(record["frame_paths"])
    assert "cnnlstm engine, fp32 + cuda_graphs" in record["series_paths"]
    for name in ("engine", "engine + cuda_graphs", "hand loop"):
        assert record["profiles"][name].startswith("host time per step") and "Self CPU" in record["profiles"][name]
    text = (out / "gpu.md").read_text()
    assert "x per-frame loop" in text and "Command: `python -m benchmarks gpu" in text
