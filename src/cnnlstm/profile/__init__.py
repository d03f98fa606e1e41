"""Cost of a model: parameters, FLOPs and peak memory as the sequence length and frame size grow.

:func:`cost_report` (:mod:`cnnlstm.profile.run`) measures a model and returns a :class:`CostTable`
(:mod:`~cnnlstm.profile.tables`, with its plot in :mod:`~cnnlstm.profile.plots`). The measurements are usable
alone: :func:`count_flops` (:mod:`~cnnlstm.profile.flops`, fused LSTM kernels included), :func:`track_peak_memory`
and :func:`measure_allocator_peak` (:mod:`~cnnlstm.profile.memory`, with the CPU kernels' scratch modelled in
:mod:`~cnnlstm.profile.kernel_scratch`).

Example:
    >>> from cnnlstm.profile import cost_report
    >>> table = cost_report("lstm_fcn", in_channels=2, num_classes=3, hidden_size=8, seq_lens=(16, 64))
    >>> print(table.to_markdown())  # doctest: +SKIP
"""

from cnnlstm.profile.flops import RNN_FLOP_FORMULAS, count_flops
from cnnlstm.profile.memory import measure_allocator_peak, track_peak_memory
from cnnlstm.profile.run import cost_report
from cnnlstm.profile.tables import BlockParams, CostRow, CostTable, format_bytes, format_si

__all__ = [
    "RNN_FLOP_FORMULAS",
    "BlockParams",
    "CostRow",
    "CostTable",
    "cost_report",
    "count_flops",
    "track_peak_memory",
    "measure_allocator_peak",
    "format_si",
    "format_bytes",
]
