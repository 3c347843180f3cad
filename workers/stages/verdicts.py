"""The image stage's way to the one table of parser failures (`workers.processing.failures.IMAGE`).

The table is imported when there is an error to judge, not when this module is: `workers.processing` imports
every processor as the package loads, and the image processor imports the image stage, so a stage module that
imports anything of `workers.processing` at the top cannot be imported first (a test, a bench; the worker and
the fork server import `workers.processing` first). And an image that decodes does not pay for loading the
PDF and video libraries the table also names (~45 MB in a fresh process). Importing the processors lazily in
`workers/processing/__init__.py`, or the table from outside that package, would let this module go.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from app.domain.rejections import Rejected


@contextlib.contextmanager
def judged_image(what: str) -> Iterator[None]:
    """`failures.judged` by the image table: a listed exception inside becomes its `Rejected`, any other
    escapes (a crash)."""
    try:
        yield
    except Rejected:
        raise
    except Exception:
        from workers.processing.failures import IMAGE, judged

        with judged(IMAGE, what):
            raise


def image_verdict(error: BaseException, what: str) -> Rejected | None:
    """What the image table makes of `error`; None: not a verdict (a crash)."""
    from workers.processing.failures import IMAGE, rejection_for

    return rejection_for(error, IMAGE, what)
