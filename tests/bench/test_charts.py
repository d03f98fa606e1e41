"""The accuracy chart takes shuffle bars only from a record of the same recipe and overrides."""

import json

from benchmarks.charts import _with_shuffle, draw_charts


def _record(recipe, shuffle=False):
    key = "ours_shuffle" if shuffle else "ours"
    return {"recipe": recipe, "overrides": [], "seeds": [0, 1, 2],
            "datasets": {"GunPoint": {key: {"mean": 0.9, "std": 0.01}, "best_published": 1.0,
                                      "minirocket": {"mean": 0.99, "std": 0.0}}}}


def test_shuffle_runs_of_another_recipe_are_left_out(tmp_path):
    path = tmp_path / "accuracy_shuffle.json"
    path.write_text(json.dumps(_record("basic_motions", shuffle=True)))
    assert "ours_shuffle" not in _with_shuffle(_record("ucr"), path)["datasets"]["GunPoint"]
    path.write_text(json.dumps(_record("ucr", shuffle=True)))
    assert _with_shuffle(_record("ucr"), path)["datasets"]["GunPoint"]["ours_shuffle"]["mean"] == 0.9


def test_charts_are_drawn_from_the_records(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "accuracy.json").write_text(json.dumps(_record("ucr")))
    written = draw_charts(results, tmp_path / "img")
    assert [p.name for p in written] == ["bench_accuracy.png"] and written[0].stat().st_size > 1000
