"""``ocrserve worker`` with one fault: the engine raises a non-OCR error on a poison page.

Run by the durability tests as a script (``python tests/poison_worker.py --burst``): the real
CLI, the real worker and the real engine, except for pages of ``POISON_SIZE``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ocrserve.cli import main
from ocrserve.engine import Engine
from ocrserve.types import OCROptions, Page, PageResult

POISON_SIZE = (123, 45)
_run = Engine.run


def _poisoned(
    self: Engine, pages: Sequence[Page], options: OCROptions | None = None
) -> list[PageResult]:
    if any((p.width, p.height) == POISON_SIZE for p in pages):
        raise RuntimeError("the poison page")
    return _run(self, pages, options)


if __name__ == "__main__":
    Engine.run = _poisoned  # type: ignore[method-assign]
    sys.argv = ["ocrserve", "worker", *sys.argv[1:]]
    main()
