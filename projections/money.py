"""Money, exactly: every reported figure (a float on the wire) becomes the ``Decimal`` of its
shortest decimal form, and sums of them never round, so a rebuild equals the live projection to
the last digit and limits compare with spend exactly. Pure."""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Final


def money(x: float) -> Decimal:
    """A reported figure (USD) as the ``Decimal`` of its shortest decimal form: 0.1 is 0.1."""
    return Decimal(repr(x))


# Sums of money are exact: the default context keeps 28 digits, so 1e6 + 1e-30 would round.
# Addition in a context this wide never rounds (digits grow only as far as the figures need).
_EXACT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def add_money(total: Decimal, x: float) -> Decimal:
    """``total + x`` exactly (``x`` in its shortest decimal form, as ``money``)."""
    return _EXACT.add(total, money(x))


def add_exact(total: Decimal, amount: Decimal) -> Decimal:
    """``total + amount`` exactly: for a figure added to several sums, made ``money`` once (the
    conversion costs more than the additions)."""
    return _EXACT.add(total, amount)


def sub_exact(a: Decimal, b: Decimal) -> Decimal:
    """``a - b`` exactly (USD)."""
    return _EXACT.subtract(a, b)


def mul_exact(a: Decimal, b: Decimal) -> Decimal:
    """``a * b`` exactly: a limit times a share (the warning threshold)."""
    return _EXACT.multiply(a, b)
