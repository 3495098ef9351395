from __future__ import annotations

import ocrserve


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name in dir(ocrserve)
        if not name.startswith("_") and not isinstance(getattr(ocrserve, name), type(ocrserve))
    }
    assert set(ocrserve.__all__) - {"__version__"} == public
