"""BSN (burgerservicenummer) validation with the elfproef (11-check)."""

from __future__ import annotations

import re

_BSN = re.compile(r"[0-9]{9}")
_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)


def is_valid_bsn(value: str) -> bool:
    """True when ``value`` is nine digits that pass the elfproef and are not all zero."""
    if not isinstance(value, str) or not _BSN.fullmatch(value) or value == "000000000":
        return False
    total = sum(int(d) * w for d, w in zip(value, _WEIGHTS, strict=True))
    return total % 11 == 0
