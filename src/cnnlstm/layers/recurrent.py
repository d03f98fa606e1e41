"""An LSTM over a padded batch that returns one vector per sequence.

``SequenceLSTM`` runs through :func:`~cnnlstm.layers.padded_lstm.run_lstm`: with lengths the recurrence stops
at each sequence's end, so padding never enters a state (packed on CUDA, an exact unpacked run on the CPU and
in exported graphs); without, it is the plain ``nn.LSTM`` call. Pooling ``"last"`` reads the final hidden
states ``h_n``: for a bidirectional LSTM that is the forward direction after the last valid step joined with the
backward direction after the first step.

:func:`lstm_chunk` and :meth:`SequenceLSTM.forward_chunk` run one chunk of a sequence from a given ``(h, c)``,
for truncated backpropagation through time (:mod:`cnnlstm.tasks.tbptt`); they live here, beside the LSTM,
so model and data code can use them without importing Lightning. A chunk still packs: it hands on the cell
state ``c`` after each sequence's last valid step, which the fused kernel's step outputs do not contain.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.checks import check_input, require_dropout, require_positive
from cnnlstm.layers.masking import check_lengths
from cnnlstm.layers.padded_lstm import run_lstm
from cnnlstm.layers.pooling import POOLING_MODES, TemporalPool

__all__ = ["LSTMState", "SequenceLSTM", "lstm_chunk"]

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (num_layers, B, H)


def lstm_chunk(
    lstm: nn.LSTM, x: Tensor, state: LSTMState | None = None, lengths: Tensor | None = None
) -> tuple[Tensor, LSTMState]:
    """Run a batch-first, unidirectional ``nn.LSTM`` over one chunk, starting from ``state``.

    Sequences with ``lengths == 0`` (already ended) keep their state unchanged and output zeros; the others
    run packed, so their state after the chunk is the state after their last valid step.

    Args:
        lstm: ``nn.LSTM(batch_first=True, bidirectional=False)``; a backward direction needs the future, which
            truncation cuts off.
        x: the chunk.
        state: ``(h, c)`` from the previous chunk, or ``None`` for zeros.
        lengths: valid steps of each sequence in this chunk (0..k), or ``None`` when none is padded.

    Shape:
        - x: ``(B, k, F)``; lengths: ``(B,)``; state: ``(L, B, H)`` each.
        - output: ``(B, k, H)`` (zeros at padded steps) and the new ``(h, c)``.

    Example:
        >>> import torch
        >>> lstm = nn.LSTM(3, 4, batch_first=True)
        >>> out, (h, c) = lstm_chunk(lstm, torch.randn(2, 5, 3), lengths=torch.tensor([5, 0]))
        >>> out.shape, bool(h[0, 1].abs().sum() == 0)
        (torch.Size([2, 5, 4]), True)
    """
    if lstm.bidirectional or not lstm.batch_first:
        raise ConfigError("TBPTT needs a batch_first, unidirectional LSTM (a backward direction sees the future)")
    if x.dim() != 3 or x.shape[2] != lstm.input_size:
        raise ShapeError(f"lstm_chunk expects (B, k, F) with F={lstm.input_size}, got {tuple(x.shape)}")
    B, k, _ = x.shape
    if state is None:
        zeros = x.new_zeros(lstm.num_layers, B, lstm.hidden_size)  # (L, B, H)
        state = (zeros, zeros)
    if lengths is None:
        out, new_state = lstm(x, state)  # (B, k, H)
        return out, new_state
    if lengths.shape != (B,) or int(lengths.min()) < 0 or int(lengths.max()) > k:
        raise ShapeError(f"lstm_chunk lengths must be (B,)={B} values in 0..{k}, got {lengths.tolist()}")
    h, c = state
    active = (lengths > 0).nonzero().squeeze(1)  # (A,) sequences with steps in this chunk
    if active.numel() == 0:
        return x.new_zeros(B, k, lstm.hidden_size), (h, c)
    active_lengths = lengths.index_select(0, active).cpu()  # pack_padded_sequence wants CPU lengths
    active = active.to(x.device)
    # enforce_sorted=False: PyTorch permutes the initial state to its sorted order and h_n back to ours.
    packed = pack_padded_sequence(x.index_select(0, active), active_lengths, batch_first=True, enforce_sorted=False)
    out_a, (h_a, c_a) = lstm(packed, (h.index_select(1, active), c.index_select(1, active)))
    out_a, _ = pad_packed_sequence(out_a, batch_first=True, total_length=k)  # (A, k, H)
    out = x.new_zeros(B, k, lstm.hidden_size).index_copy(0, active, out_a)  # (B, k, H)
    return out, (h.index_copy(1, active, h_a), c.index_copy(1, active, c_a))  # ended sequences keep theirs


class SequenceLSTM(nn.Module):
    """``nn.LSTM`` (batch-first) over a padded batch, pooled to ``(B, out_features)``.

    Args:
        input_size: features per step ``F``.
        hidden_size: LSTM hidden size ``H``.
        num_layers: stacked LSTM layers.
        bidirectional: run a backward LSTM too; ``out_features = 2 H``.
        dropout: dropout between stacked layers (ignored for one layer, as in ``nn.LSTM``).
        pooling: one of :data:`~cnnlstm.layers.pooling.POOLING_MODES`; ``"last"`` uses the final states.

    Shape:
        - x: ``(B, T, F)``; lengths: ``(B,)`` int, optional.
        - output: ``(B, out_features)``.

    Example:
        >>> import torch
        >>> lstm = SequenceLSTM(4, 8, bidirectional=True)
        >>> lstm(torch.randn(2, 5, 4), lengths=torch.tensor([5, 2])).shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str = "last",
    ) -> None:
        super().__init__()
        require_positive("SequenceLSTM", input_size=input_size, hidden_size=hidden_size, num_layers=num_layers)
        require_dropout("SequenceLSTM", dropout=dropout)
        self.lstm = nn.LSTM(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,  # nn.LSTM warns about (and ignores) it for one layer
        )
        self.num_directions = 2 if bidirectional else 1
        self.out_features = hidden_size * self.num_directions
        self.pooling = pooling
        if pooling not in POOLING_MODES:
            TemporalPool(pooling)  # raises the ConfigError with suggestions
        self.pool = None if pooling == "last" else TemporalPool(pooling, input_size=self.out_features)

    def forward_sequence(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """All step outputs and the last layer's final hidden states.

        Shape:
            - x: ``(B, T, F)``; lengths: ``(B,)``, optional.
            - outputs: ``(B, T, out_features)``, zeros at padded steps; final: ``(B, out_features)``.
        """
        check_input(x, "B, T, F", "SequenceLSTM", what="a sequence", F=self.lstm.input_size)
        B, T, _ = x.shape
        lengths = check_lengths(lengths, B, T, owner="SequenceLSTM")
        return run_lstm(self.lstm, x, lengths)  # (B, T, dirs*H), (B, dirs*H)

    def check_chunkable(self, owner: str = "SequenceLSTM") -> None:
        """Refuse settings under which a chunked run is not the same model: a backward direction or pooling.

        Truncated BPTT classifies from the final state after the last chunk, which is this layer's output only
        for a unidirectional LSTM with ``pooling="last"``.

        Args:
            owner: the model name for the error message.

        Raises:
            ConfigError: ``bidirectional=True`` or ``pooling != "last"``.

        Example:
            >>> SequenceLSTM(4, 8).check_chunkable()
        """
        if self.num_directions != 1:
            raise ConfigError(f"{owner}: truncated BPTT (trainer.tbptt_steps) needs bidirectional=false; the "
                              "backward direction reads the future, which a chunk does not have")
        if self.pooling != "last":
            raise ConfigError(f"{owner}: truncated BPTT (trainer.tbptt_steps) needs pooling='last', got "
                              f"{self.pooling!r}; {self.pooling} pooling needs every step's output at once")

    def forward_chunk(
        self, x: Tensor, state: LSTMState | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, LSTMState]:
        """One chunk of the LSTM from ``state`` (see :func:`lstm_chunk`); ``state[0][-1]`` after the last chunk
        is what :meth:`forward` returns for the whole sequence.

        Args:
            x: the chunk's features.
            state: ``(h, c)`` the previous chunk returned, or ``None`` at the start.
            lengths: valid steps of each sequence in this chunk (0..k), or ``None`` when none is padded.

        Shape:
            - x: ``(B, k, F)``; lengths: ``(B,)`` in 0..k, optional.
            - output: ``(B, k, H)`` (zeros at padded steps) and ``(h, c)``, each ``(num_layers, B, H)``.

        Example:
            >>> import torch
            >>> lstm = SequenceLSTM(4, 8)
            >>> x = torch.randn(2, 6, 4)
            >>> _, state = lstm.forward_chunk(x[:, :3])
            >>> _, (h, _) = lstm.forward_chunk(x[:, 3:], state)
            >>> torch.allclose(h[-1], lstm(x), atol=1e-6)
            True
        """
        self.check_chunkable()
        check_input(x, "B, k, F", "SequenceLSTM", what="a chunk", F=self.lstm.input_size)
        return lstm_chunk(self.lstm, x, state, lengths)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Pool the LSTM over each sequence's valid steps; see the class docstring for shapes."""
        outputs, final = self.forward_sequence(x, lengths)
        if self.pool is None:
            return final  # (B, dirs*H)
        return self.pool(outputs, lengths=lengths)  # (B, dirs*H)
