"""The speed suite: both throughput comparisons in one process, with the load recorded before and after."""

from __future__ import annotations

from typing import Any

from benchmarks.machine import load_average
from benchmarks.speed_frames import frame_lstm_speed
from benchmarks.speed_lstm_fcn import lstm_fcn_speed

__all__ = ["run_speed", "speed_markdown"]


def run_speed(*, repeats: int = 3, keras: bool = True, small: bool = False, log: Any = print) -> dict[str, Any]:
    """Measure frame_lstm (folded vs per-frame loop) and lstm_fcn (engine vs hand loops vs Keras) training speed.

    Args:
        repeats: timed units per path; medians are reported.
        keras: include Keras 3 (torch backend).
        small: tiny sizes (smoke tests; the ratios then mean little).
        log: called with one line per finished comparison.

    Returns:
        ``{"frame_lstm": {...}, "lstm_fcn": {...}, "load_before", "load_after"}``.

    Example:
        >>> record = run_speed(repeats=3)  # doctest: +SKIP
    """
    record: dict[str, Any] = {"load_before": load_average(), "repeats": repeats, "small": small}
    record["frame_lstm"] = frame_lstm_speed(repeats=repeats, small=small, steps=2 if small else 20)
    log(f"speed: frame_lstm folded / loop = {record['frame_lstm']['ratio_folded_over_loop']:.2f}x")
    record["lstm_fcn"] = lstm_fcn_speed(repeats=repeats, keras=keras, small=small)
    log("speed: lstm_fcn " + ", ".join(f"{k} = {v:.2f}x" for k, v in record["lstm_fcn"]["ratios"].items()))
    record["load_after"] = load_average()
    return record


def _table(paths: dict[str, Any], unit: str, baseline: str) -> list[str]:
    base = paths[baseline]["median"]
    lines = [f"| path | {unit} (median) | runs | × {baseline} |", "|---|---|---|---|"]
    for name, p in paths.items():
        rates = ", ".join(f"{r:.0f}" if r >= 100 else f"{r:.1f}" for r in p["rates"])
        lines.append(f"| {name} | {p['median']:.1f} | {rates} | {p['median'] / base:.2f} |")
    return lines


def speed_markdown(record: dict[str, Any]) -> str:
    """Both speed comparisons as Markdown tables with the sizes and the load around the run.

    Example:
        >>> print(speed_markdown(record))  # doctest: +SKIP
    """
    fr, fc = record["frame_lstm"], record["lstm_fcn"]
    s = fr["sizes"]
    load = f"load average before {record['load_before']}, after {record['load_after']}"
    lines = [f"frame_lstm training step (forward + backward + AdamW), {s['B']} clips x {s['T']} frames x "
             f"{s['C']}x{s['H']}x{s['W']}, CNN widths {s['widths']}, LSTM {s['hidden']}; {load}. "
             f"Logits of both paths agree to {fr['max_abs_diff']:.1e}.", ""]
    lines += _table(fr["paths"], "clips/s", "per-frame Python loop")
    z = fc["sizes"]
    lines += ["", f"LSTM-FCN training epoch, {z['N']} series x {z['L']} steps x {z['C']} channels, {z['K']} classes, "
              f"batch {z['batch']}; {load}.", ""]
    lines += _table(fc["paths"], "samples/s", "hand loop, plain nn.Module")
    if fc.get("keras_error"):
        lines += ["", f"Keras not measured: {fc['keras_error']}"]
    return "\n".join(lines)
