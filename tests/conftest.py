from __future__ import annotations

from pathlib import Path

import pytest

from ocrserve import Engine, Settings

FIXTURES = Path(__file__).parent / "fixtures"
#: The project's evaluation data, beside the repository (read at test time, never committed).
SHARED_EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "eval"


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate with whitespace runs collapsed (as the project's scorer does)."""
    ref, hyp = " ".join(reference.split()), " ".join(hypothesis.split())
    prev = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        cur = [i]
        for j, b in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1] / max(len(ref), 1)


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine.from_settings(Settings(intra_op_threads=2))
