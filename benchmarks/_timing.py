"""Shared timing helpers: repeat a measurement, report minimum and median per call in µs.

Shared machines are noisy: compare figures measured in the same run, quote the minimum (the
cost without interference) and the median (what a typical call sees), never one number.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable


def per_call_us(
    fn: Callable[[], object], *, number: int = 20_000, repeat: int = 7
) -> tuple[float, float]:
    """(minimum, median) microseconds per call of ``fn`` over ``repeat`` runs of ``number``."""
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    per = [r / number * 1e6 for r in runs]
    return min(per), statistics.median(per)


def row(
    label: str, figures: tuple[float, float], ratio_to: tuple[float, float] | None = None
) -> str:
    lo, med = figures
    text = f"{label:<48} min {lo:8.3f} µs   median {med:8.3f} µs"
    if ratio_to is not None:
        text += f"   ×{lo / ratio_to[0]:5.2f} of baseline (min)"
    return text
