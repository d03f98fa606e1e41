"""Helpers of the report tests: read a report page back, and an independent per-sample loss loop."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from cnnlstm.data.collate import pad_collate
from cnnlstm.engine.fit import rebuild_run

__all__ = ["Page", "read_page", "reference_losses", "check_run_page"]


class Page(HTMLParser):
    """What a report page shows: metric values, gallery examples, table cells, pictures and outside references."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, str] = {}
        self.examples: list[tuple[int, float]] = []
        self.sources: list[str] = []
        self.tags: list[str] = []
        self.per_class: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if "data-metric" in a and "data-value" in a:
            self.metrics.setdefault(a["data-metric"], a["data-value"])
        if "example" in (a.get("class") or "").split():
            self.examples.append((int(a["data-index"]), float(a["data-loss"])))
        if "data-class" in a:
            self.per_class.append(a["data-class"])
        for key in ("src", "href", "action", "poster"):
            if a.get(key) is not None:
                self.sources.append(a[key])

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


def read_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@torch.no_grad()
def reference_losses(run_dir: Path) -> list[float]:
    """Each test sample's loss, one sample at a time through the task's own (batch-mean) loss."""
    _, bundle, _, task = rebuild_run(run_dir)
    task.eval()
    collate = bundle.collate_fn or pad_collate
    return [float(task.step(collate([bundle.test[i]]), "val")) for i in range(len(bundle.test))]


def check_run_page(run_dir: Path, path: Path, k: int) -> Page:
    """The page shows metrics.json's test metrics exactly and the k worst test samples by loss, worst first."""
    page = read_page(path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    tested = {key: v for key, v in metrics.items() if key.startswith("test/")}
    assert tested
    for key, value in tested.items():
        assert float(page.metrics[key]) == value, key  # the exact float, not a rounding of it
    losses = reference_losses(run_dir)
    shown = page.examples
    assert len(shown) == min(k, len(losses))
    for index, loss in shown:
        assert loss == pytest.approx(losses[index], rel=1e-4, abs=1e-6), index
    assert [loss for _, loss in shown] == sorted((loss for _, loss in shown), reverse=True)
    hidden = [loss for i, loss in enumerate(losses) if i not in {j for j, _ in shown}]
    assert all(loss <= shown[-1][1] + 1e-5 for loss in hidden)  # nothing left out is worse than the last shown
    # Self-contained: pictures are data URIs; no scripts, style sheets or links to fetch.
    assert page.sources and all(s.startswith("data:image/png;base64,") for s in page.sources)
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    return page
