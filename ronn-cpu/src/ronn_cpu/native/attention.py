"""Native masked Softmax of attention scores behind :mod:`ronn_cpu.jit.attention`'s interface.

``softmax_<type>[_par](s, scale, condition, keeps, fill, use_condition, mask, use_mask)`` call
the C kernel and, where it declines (strided scores, a mask or condition it does not take), the
numba one. Other names are the numba module's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import jit
from ..jit import load_numba
from . import extension

_c: Any = extension("attention")


def _softmax(name: str, wide: bool) -> Callable[..., None]:
    run_c = _c.softmax

    def softmax(
        s: Any, scale: Any, condition: Any, keeps: bool, fill: Any, use_condition: bool, mask: Any, use_mask: bool
    ) -> None:
        """Scale, fill, add and normalize every row of the scores ``s`` (A, B, S, T) in place."""
        args = (s, scale, condition, keeps, fill, use_condition, mask, use_mask)
        if run_c(jit.THREADS if wide else 1, *args) is NotImplemented:
            getattr(load_numba("attention"), name)(*args)

    softmax.__name__ = softmax.__qualname__ = name
    return softmax


softmax_f32 = _softmax("softmax_f32", False)
softmax_f32_par = _softmax("softmax_f32_par", True)
softmax_f64 = _softmax("softmax_f64", False)
softmax_f64_par = _softmax("softmax_f64_par", True)


def __getattr__(name: str) -> Any:
    return getattr(load_numba("attention"), name)
