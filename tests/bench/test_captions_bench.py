"""``python -m benchmarks captions``: beam 1 against the independent greedy loop, and the suite's record and tables."""

from __future__ import annotations

import json

import pytest
import torch
from torchmetrics.text import BLEUScore

from benchmarks import main
from benchmarks.captions import greedy_captions, score_decoders
from cnnlstm import create_model
from cnnlstm.data.builtin.shape_captions import shape_captions

TINY = ["data.options.n_train=20", "data.options.n_test=6", "data.options.image_size=32", "data.options.object_size=8",
        "data.batch_size=10", "trainer.max_epochs=1", "model.encoder_kwargs.widths=[4,8]", "model.embedding_dim=8",
        "model.hidden_size=8", "model.attention_size=8"]


@pytest.fixture(scope="module")
def tiny():
    bundle = shape_captions(n_train=1, n_test=6, image_size=32, object_size=8)
    torch.manual_seed(0)
    model = create_model("captioner", vocab_size=len(bundle.info.extras["vocab"]), encoder_kwargs={"widths": [4, 8]},
                         embedding_dim=8, hidden_size=8, attention_size=8).eval()
    return model, bundle


def test_greedy_loop_matches_generate_with_one_beam(tiny):
    model, bundle = tiny
    images = torch.stack([bundle.test[i]["images"] for i in range(len(bundle.test))])  # (6, 3, 32, 32)
    assert greedy_captions(model, images, max_length=7) == model.generate(images, max_length=7, beam_size=1)


def test_untrained_model_beam_one_bleu_equals_greedy_bleu(tiny):
    model, bundle = tiny
    vocab = bundle.info.extras["vocab"]
    images = torch.stack([bundle.test[i]["images"] for i in range(len(bundle.test))])
    # References that make BLEU informative for an untrained model: its own beam-3 captions (a known answer, 1.0).
    beam3 = [" ".join(vocab[i] for i in ids) for ids in model.generate(images, max_length=7, beam_size=3)]
    scores = score_decoders(model, bundle.test, vocab, [[c] for c in beam3], beams=[1, 3], max_length=7)
    assert set(scores) == {"greedy", "beam 1", "beam 3"}
    assert scores["beam 3"]["bleu4_all_orders"] == pytest.approx(1.0)
    assert scores["beam 1"]["bleu4_all_orders"] == scores["greedy"]["bleu4_all_orders"]
    assert scores["beam 1"]["bleu4"] == scores["greedy"]["bleu4"]
    assert scores["beam 1"]["same_as_greedy"] == 1.0 and scores["greedy"]["same_as_greedy"] == 1.0
    greedy = [" ".join(vocab[i] for i in ids) for ids in greedy_captions(model, images, max_length=7)]
    expected = round(float(BLEUScore(n_gram=4)(greedy, [[c] for c in beam3])), 4)
    assert scores["greedy"]["bleu4_all_orders"] == expected
    assert all(d["ms_per_caption"] > 0 for d in scores.values())


def test_captions_suite_tiny_run_writes_record_and_markdown(tmp_path, capsys):
    out, runs = tmp_path / "results", tmp_path / "runs"
    status = main(["captions", "--captions-set", *TINY, "--captions-accelerator", "cpu", "--captions-beams", "1", "3",
                   "--out", str(out), "--runs", str(runs)])
    assert status == 0
    record = json.loads((out / "captions.json").read_text())
    (run,) = record["runs"]
    assert run["seed"] == 0 and run["epochs"] == 1 and (run["train_samples"], run["test_samples"]) == (18, 6)
    assert set(record["decoders"]) == {"greedy", "beam 1", "beam 3"}
    # Same checkpoint, same single reference, same length limit: the trainer's test BLEU is the greedy one.
    assert run["decoders"]["greedy"]["bleu4"] == pytest.approx(run["test_bleu4"], abs=1e-4)
    assert record["decoders"]["beam 1"]["same_as_greedy"] == 1.0
    assert record["decoders"]["beam 3"]["bleu4"]["mean"] == run["decoders"]["beam 3"]["bleu4"]
    table = (out / "captions.md").read_text()
    assert table.startswith("Machine: ") and "python -m benchmarks captions" in table
    assert "| beam search, 3 |" in table and "| greedy (teacher-forced loop) |" in table
    assert "100.0% of captions identical" in capsys.readouterr().out
