"""Progress bars that suit both a terminal and a log file.

On a terminal tqdm redraws up to ten times a second, which is what a person watching wants. Written to a
file (a batch job's log, ``demo.sh > log``) every redraw is kept as a line, so there the bars redraw at
most every ``LOG_REDRAW_SECONDS``; nested bars, which move the cursor with escape codes, are not drawn.
"""
from __future__ import annotations

import sys
from typing import Any

LOG_REDRAW_SECONDS = 10.0


def writes_to_terminal() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def quiet_bar_options(enabled: bool = True, nested: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``tqdm(...)``: ``disable`` and the redraw interval, by where stderr goes.

    ``nested``: a bar drawn while another one is open; shown on a terminal only.
    """
    if writes_to_terminal():
        return {"disable": not enabled}
    return {"disable": not enabled or nested, "mininterval": LOG_REDRAW_SECONDS,
            "maxinterval": 10 * LOG_REDRAW_SECONDS}
