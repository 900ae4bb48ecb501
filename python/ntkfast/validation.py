"""Checks of scalar arguments, used by every module: one convention for types, values and messages.

- TypeError when the argument has the wrong type (a float or a bool where an int is expected, a string
  where a number is expected), ValueError when its value is outside what is accepted;
- every message names the argument (or the command-line option), says what was expected and what was
  given: ``"steps must be >= 0; got -1"``, ``"lr must be a finite number > 0.0; got -0.1"``,
  ``"model must be one of 'linearized', 'quadratic', ...; got 'cubic'"``.

``expected`` replaces the generated description of what is accepted where a domain has better words
(``tile must be a positive int (images per tile side) or None; got 0``). Arrays are checked where their
shapes mean something (:mod:`ntkfast.kernel.inputs` for images and vectors, the Gram checks of
:mod:`ntkfast.krr`); the device is :func:`ntkfast.device.check`.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_int", "check_real", "check_choice", "check_seed", "check_finite"]


def check_int(value, name, minimum=None, maximum=None, *, expected=None):
    """``value`` as an int (bools refused) in [minimum, maximum] (either bound may be None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {expected or 'an int'}; got {value!r}")
    low = minimum is not None and value < minimum
    high = maximum is not None and value > maximum
    if low or high:
        if expected is None:
            if minimum is not None and maximum is not None:
                expected = f"in {minimum}..{maximum}"
            elif minimum is not None:
                expected = f">= {minimum}"
            else:
                expected = f"<= {maximum}"
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return int(value)


def check_real(value, name, minimum=None, *, strict=False, maximum=None, expected=None):
    """``value`` as a finite float (bools refused), ``>= minimum`` (``> minimum`` with ``strict``) and
    ``<= maximum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expected or 'a real number'}; got {value!r}")
    v = float(value)
    bad = not math.isfinite(v)
    bad = bad or (minimum is not None and (v < minimum or (strict and v == minimum)))
    bad = bad or (maximum is not None and v > maximum)
    if bad:
        if expected is None:
            expected = "a finite number"
            if minimum is not None:
                expected += f" {'>' if strict else '>='} {minimum!r}"
            if maximum is not None:
                expected += f"{' and' if minimum is not None else ''} <= {maximum!r}"
        raise ValueError(f"{name} must be {expected}; got {value!r}")
    return v


def _listed(choices):
    words = [repr(c) for c in choices]
    if len(words) > 3:
        return "one of " + ", ".join(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def check_choice(value, name, choices, *, expected=None):
    """``value`` if it is one of ``choices``; TypeError for a non-string where the choices are strings,
    ValueError otherwise. The message lists the choices ('a' or 'b'; one of 'a', 'b', 'c', 'd', ...)."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value against a set
        ok = False
    if ok:
        return value
    what = expected or _listed(choices)
    if not isinstance(value, str) and all(isinstance(c, str) for c in choices):
        raise TypeError(f"{name} must be {what}; got {value!r}")
    raise ValueError(f"{name} must be {what}; got {value!r}")


def check_seed(seed, name="seed"):
    """A seed for ``numpy.random.default_rng``: None, a numpy Generator (returned as is) or an int >= 0."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    return check_int(seed, name, 0, expected="a non-negative int, a numpy Generator or None")


def check_finite(a, name, xp=np):
    """ValueError when the array ``a`` (of module ``xp``) has NaN or Inf entries, saying how many."""
    bad = int(a.size - int(xp.count_nonzero(xp.isfinite(a))))
    if bad:
        raise ValueError(f"{name} must be finite; got {bad} NaN/Inf entries")
    return a
