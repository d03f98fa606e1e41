"""``python -m benchmarks crnn`` on a tiny budget: the record's structure, and figures that two routes must agree on."""

from __future__ import annotations

import json

import pytest

from benchmarks import main
from benchmarks.crnn import BENCH_SETS, bench_overrides
from cnnlstm.engine import load_weights, resolve_config

TINY = ["data.options.n_train=24", "data.options.n_test=6", "data.batch_size=8", "trainer.max_epochs=1",
        "model.widths=[4,4,4,4,8,8]", "model.hidden_size=8", "model.num_layers=1"]


def test_overrides_put_the_issue_test_set_first_and_user_sets_last():
    sets = bench_overrides(["data.options.n_test=7"], "gpu")
    assert sets[: len(BENCH_SETS)] == list(BENCH_SETS)
    config = resolve_config("captcha_crnn", overrides=sets)
    assert config["data"]["options"]["n_test"] == 7  # the user's --crnn-set wins
    assert config["data"]["options"]["length"] == 4
    assert config["trainer"]["accelerator"] == "gpu"
    assert resolve_config("captcha_crnn", overrides=bench_overrides([], "cpu"))["data"]["options"]["n_test"] == 2000


def test_crnn_suite_tiny_run_writes_record_and_markdown(tmp_path, capsys):
    out, runs = tmp_path / "results", tmp_path / "runs"
    status = main(["crnn", "--crnn-set", *TINY, "--crnn-accelerator", "cpu", "--crnn-beam", "3",
                   "--out", str(out), "--runs", str(runs)])
    assert status == 0
    record = json.loads((out / "crnn.json").read_text())
    (run,) = record["runs"]
    assert run["seed"] == 0 and run["epochs"] == 1 and (run["train_samples"], run["test_samples"]) == (22, 6)
    # test_acc and test_cer are checked below against the bench's own decoding of the saved weights.
    (weights,) = runs.rglob("seed0/checkpoints/best.safetensors")
    assert run["params"] == sum(p.numel() for p in load_weights(weights).parameters())
    assert record["test_acc"]["mean"] == pytest.approx(run["test_acc"], abs=1e-4)
    assert record["target"] == 0.95 and record["target_met"] is (record["test_acc"]["mean"] >= 0.95)
    assert record["settings"]["options"] == {"n_train": 24, "n_test": 6, "length": 4}
    # The bench re-reads the saved weights outside Lightning: best-path decoding must repeat the trainer's test.
    decoding = run["decoding"]
    assert set(decoding["decoders"]) == {"greedy", "beam 3"} and decoding["test_images"] == 6
    assert decoding["decoders"]["greedy"]["acc"] == pytest.approx(run["test_acc"], abs=1e-4)
    assert decoding["decoders"]["greedy"]["cer"] == pytest.approx(run["test_cer"], abs=1e-4)
    assert decoding["render_ms_per_image"] > 0 and decoding["device"] == "cpu"
    assert set(record["decoding"]) == {"greedy", "beam 3"} and record["greedy_vs_trainer_max_gap"] < 1e-4
    table = (out / "crnn.md").read_text()
    assert table.startswith("Machine: ") and "python -m benchmarks crnn" in table
    assert "prefix beam search, 3 beams" in table
    assert ("**met**" if record["target_met"] else "**not met**") in table
    assert "| crnn [4, 4, 4, 4, 8, 8], BiLSTM 8x1 |" in capsys.readouterr().out
