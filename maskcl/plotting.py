"""matplotlib for maskcl's plots, an optional extra (``pip install 'maskcl[plot]'``)."""

from __future__ import annotations

from typing import Any

from maskcl.errors import MaskclError


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display), or a one-line error."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot
    except ImportError as err:
        raise MaskclError("plots need matplotlib: pip install 'maskcl[plot]'") from err
    return matplotlib.pyplot
