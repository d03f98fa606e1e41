"""HTML pages of runs: one self-contained file (styles inline, pictures as data URIs, no scripts, no network).

The pages are Jinja2 templates shipped in ``cnnlstm/report/templates``; every value is HTML-escaped. Metric
values carry their exact number in ``data-value`` (``repr`` of the float), so a reader, or a test, can check
the page against ``metrics.json``.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["render_page", "format_value"]

_TEMPLATES = Path(__file__).parent / "templates"


def format_value(value: Any) -> str:
    """A metric as shown on a page: floats to four significant decimals, ints with thousands separators.

    Example:
        >>> format_value(0.123456), format_value(1234567), format_value(None), format_value(1e-07)
        ('0.1235', '1,234,567', '—', '1e-07')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4f}"


def _raw(value: Any) -> str:
    """The exact value for ``data-value``: ``repr`` of numbers (round-trips a float), the text otherwise."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def render_page(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with ``context`` (``title``, ``subtitle`` and the template's own keys).

    Args:
        template: ``"run.html.j2"`` (one run) or ``"compare.html.j2"`` (several side by side).
        **context: the template's values.

    Example:
        >>> render_page("compare.html.j2", title="t", subtitle="", runs=[], rows=[], curves=None)[:15]
        '<!DOCTYPE html>'
    """
    import jinja2

    from cnnlstm import __version__

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = format_value
    env.filters["raw"] = _raw
    context.setdefault("version", __version__)
    context.setdefault("written", datetime.now().strftime("%Y-%m-%d %H:%M"))
    return env.get_template(template).render(**context)
