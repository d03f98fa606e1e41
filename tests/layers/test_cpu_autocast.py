"""LSTMs under CPU bf16 autocast on an AVX2-only processor (oneDNN without a bf16 LSTM kernel).

``ONEDNN_MAX_CPU_ISA=AVX2`` makes oneDNN behave as on such a processor; it is read once, when oneDNN starts, so
each check runs in a fresh interpreter. On an AVX2-only machine the variable changes nothing and the checks
hold all the same.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from cnnlstm.layers.cpu_autocast import bf16_lstm_falls_back


def _run_avx2(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


_LSTM_CHECK = """
    import json
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    from cnnlstm.layers.cpu_autocast import bf16_lstm_falls_back

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(2, 4, 3)
    lengths = torch.tensor([4, 2])

    def run(autocast):
        lstm.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            padded, _ = lstm(x)
            packed, _ = lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        packed, _ = pad_packed_sequence(packed, batch_first=True)
        (padded.float().sum() + packed.float().square().sum()).backward()
        return padded, packed, lstm.weight_hh_l1_reverse.grad.clone()

    ref, mixed = run(False), run(True)
    print(json.dumps({"falls_back": bf16_lstm_falls_back(), "dtypes": [str(t.dtype) for t in mixed],
                      "max_diff": max(float((a.float() - b.float()).abs().max()) for a, b in zip(ref, mixed))}))
"""


@pytest.mark.slow
def test_lstm_under_bf16_autocast_runs_in_float32_where_onednn_has_no_bf16_kernel():
    done = _run_avx2(_LSTM_CHECK)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["falls_back"]:
        # The fallback runs the same float32 kernel as the reference: padded and packed outputs and gradients agree.
        assert result["dtypes"] == ["torch.float32"] * 3
        assert result["max_diff"] < 1e-6
    else:  # a processor whose oneDNN does run bf16 LSTMs with AVX2 only: bf16 results, bf16 tolerance
        assert result["max_diff"] < 0.1


_MODELS_CHECK = """
    import json
    import torch
    import cnnlstm

    done = []
    for name in cnnlstm.list_models():
        model = cnnlstm.create_model(name, **json.loads(__import__("sys").argv[1])[name])
        inputs = model.example_input()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**inputs)
        out = out if torch.is_tensor(out) else next(v for v in out.values() if torch.is_tensor(v))
        out.float().sum().backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters()), name
        done.append(name)
    print(json.dumps(done))
"""

_KWARGS = {
    "frame_lstm": {"num_classes": 3}, "captioner": {"vocab_size": 12}, "lstm_fcn": {"in_channels": 3, "num_classes": 4},
    "mlstm_fcn": {"in_channels": 3, "num_classes": 4}, "deep_conv_lstm": {"in_channels": 3, "num_classes": 4},
    "crnn": {"num_classes": 11}, "conv_lstm_forecaster": {"in_channels": 1},
    "multi_input": {"num_classes": 3, "vocab_size": 12}, "minirocket": {"num_classes": 3, "in_channels": 2},
}


@pytest.mark.slow
def test_every_model_trains_a_step_under_bf16_autocast_on_avx2():
    from cnnlstm.models import get_model_class, list_models

    # The library's own models (other tests register toys in this process; the subprocess sees only these).
    library = [name for name in list_models() if get_model_class(name).__module__.startswith("cnnlstm.models.")]
    missing = set(library) - set(_KWARGS)
    assert not missing, f"add constructor arguments for {sorted(missing)}"
    done = _run_avx2(_MODELS_CHECK, json.dumps(_KWARGS))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == library


@pytest.mark.slow
def test_bf16_mixed_fit_of_an_lstm_model_works_on_avx2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cnnlstm", "fit", "--recipe", "basic_motions", "--out", str(tmp_path / "run"),
         "--set", "trainer.precision=bf16-mixed", "trainer.max_epochs=1", "trainer.enable_progress_bar=false"],
        env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/loss"])
    assert f"test accuracy: {metrics['test/acc']:.4f}" in done.stdout


def test_this_process_reports_its_fallback_consistently():
    # Same answer as a fresh probe: a bf16 LSTM under autocast either runs natively or is served in float32.
    lstm = torch.nn.LSTM(2, 3, batch_first=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = lstm(torch.randn(1, 2, 2))
    assert out.dtype == (torch.float32 if bf16_lstm_falls_back() else torch.bfloat16)
