"""What a dataset tells the model, the task and ``cnnlstm predict`` about itself: :class:`DataInfo`.

Every loader returns its :class:`~cnnlstm.data.DatasetBundle` with a ``DataInfo``; a finished run writes it
to ``data_info.json`` (:meth:`DataInfo.to_dict`) and ``cnnlstm test/predict/export`` read it back
(:meth:`DataInfo.from_dict`), old run directories included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DataInfo", "RECORDED_EXTRAS"]

#: the extras a run records in ``data_info.json`` besides the typed fields: what predicting, testing and
#: exporting need to read new inputs and decode outputs as training did (per-sample entries such as a test set's
#: reference captions stay out)
RECORDED_EXTRAS = ("charset", "vocab", "answers", "question_types", "data_range", "lengths", "image_height",
                   "context", "max_caption_length", "num_frames")

# typed fields a run record leaves out: one entry per training sample, re-derived whenever the data loads
_PER_SAMPLE = ("targets", "groups")


@dataclass
class DataInfo:
    """What the data fixes for the model and the task, typed where most kinds share it.

    The typed fields are the ones several kinds and several modules read (the model's data-fixed kwargs, class
    names, stratification targets, validation groups, normalisation, image size) and the run record's
    ``name``/``kind``/``task``. What only one kind has lives in ``extras``, by name: ``charset`` (text_image),
    ``vocab`` (vqa, captions), ``answers`` and ``question_types`` (vqa), ``references`` and
    ``max_caption_length`` (captions), ``context`` and ``data_range`` (forecast), ``image_height`` (``text:``
    lines), ``num_frames`` (frames), ``lengths`` (series), plus descriptive entries a loader adds (``colours``,
    ``rule``, ...). They stay a plain dict rather than a dataclass per kind: each kind has a handful of them,
    each read by its own task and by predict, and a class per kind would bring back a switch on the kind to read
    ``data_info.json`` -- the thing :func:`cnnlstm.tasks.build_task` no longer needs.

    Args:
        model_kwargs: model kwargs the data fixes (``num_classes``, ``in_channels``, ``vocab_size``,
            ``image_size``, ``horizon``, ...).
        class_names: one name per class (classification data); ``None`` otherwise.
        targets: the training split's labels, for stratified validation splits (not recorded in runs, not
            compared by ``==``, not shown by ``repr``: one entry per sample).
        groups: the source of each training sample (e.g. its scene): validation then takes whole groups (not
            recorded, compared or shown either).
        normalization: how the data was normalised (``mode``, ``mean``, ``std``, ``interpolation``, ``source``);
            empty when it was not.
        image_size: ``(H, W)`` frames and images are resized to; ``None`` when the data does not resize.
        name: the dataset spec; set in a run's record (a bundle carries its own ``name``).
        kind: the dataset kind; set in a run's record.
        task: the task the run trained; set in a run's record.
        extras: kind-specific entries (see above).

    Example:
        >>> info = DataInfo(model_kwargs={"num_classes": 2}, class_names=["a", "b"], extras={"num_frames": 8})
        >>> DataInfo.from_dict(info.to_dict()) == info
        True
    """

    model_kwargs: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    targets: Any = field(default=None, compare=False, repr=False)  # per sample: tensors compare elementwise
    groups: Any = field(default=None, compare=False, repr=False)
    normalization: dict[str, Any] = field(default_factory=dict)
    image_size: tuple[int, int] | None = None
    name: str | None = None
    kind: str | None = None
    task: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int):  # a square side, as some older runs recorded it
            self.image_size = (self.image_size, self.image_size)
        elif self.image_size is not None:
            self.image_size = tuple(int(s) for s in self.image_size)  # type: ignore[assignment]
        if self.class_names is not None:
            self.class_names = list(self.class_names)
        self.normalization = dict(self.normalization or {})

    def with_extras(self, **entries: Any) -> DataInfo:
        """A copy with ``entries`` added to (or replacing those of) ``extras``."""
        return dataclasses.replace(self, extras={**self.extras, **entries})

    def for_run(self, name: str, kind: str, task: str) -> DataInfo:
        """A copy that names the dataset, its kind and the task trained on it: a run's ``data_info.json``."""
        return dataclasses.replace(self, name=name, kind=kind, task=task)

    def to_dict(self, *, per_sample: bool = False) -> dict[str, Any]:
        """The JSON-ready entries of ``data_info.json``: typed fields that are set, then recorded extras.

        Args:
            per_sample: also the per-sample fields (``targets``, ``groups``) and every extra, not only
                :data:`RECORDED_EXTRAS` (for an in-memory copy; they are not JSON-ready).
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extras" or (f.name in _PER_SAMPLE and not per_sample):
                continue
            if value is None or (f.name == "normalization" and not value):
                continue
            out[f.name] = list(value) if f.name == "image_size" else value
        out.update({k: v for k, v in self.extras.items() if per_sample or k in RECORDED_EXTRAS})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataInfo:
        """A ``DataInfo`` from :meth:`to_dict`'s entries or an older run's plain ``data_info.json``.

        Keys that are not typed fields (a kind's entries, or ones older versions wrote) go to ``extras``, so
        every run directory still loads.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"extras"}
        typed = {k: v for k, v in data.items() if k in names and v is not None}
        extras = {k: v for k, v in data.items() if k not in names}
        return cls(**typed, extras=extras)
