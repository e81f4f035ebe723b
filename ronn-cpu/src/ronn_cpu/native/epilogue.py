"""Native epilogues, unary fits and small binary arithmetic behind :mod:`ronn_cpu.jit.epilogue`'s
interface (``BIAS[kind]``, ``erf``/``erf_par``, ``BINARY[name]`` and so on).

Each calls the C function and, where it declines the arguments, the numba kernel; names not
defined here are the numba module's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import jit
from ..jit import load_numba
from . import extension

KINDS = {
    None: 0, "Relu": 1, "LeakyRelu": 2, "Clip": 3, "Sigmoid": 4, "HardSigmoid": 5, "HardSwish": 6,
    "Tanh": 7, "Gelu": 8, "GeluTanh": 9,
}  # fmt: skip
_NAMES = ("none", "relu", "leaky_relu", "clip", "sigmoid", "hard_sigmoid", "hard_swish", "tanh", "gelu", "gelu_tanh")

_c: Any = extension("epilogue")


def _bias(kind: int, wide: bool) -> Callable[..., None]:
    fallback = f"bias_{_NAMES[kind]}{'_par' if wide else ''}"
    run_c = _c.bias

    def bias(dst: Any, shift: Any, res: Any, has_res: bool, channels: int, inner: int, params: Any) -> None:
        threads = jit.THREADS if wide else 1
        if run_c(kind, threads, dst, shift, res, has_res, channels, inner, params) is NotImplemented:
            getattr(load_numba("epilogue"), fallback)(dst, shift, res, has_res, channels, inner, params)

    return bias


def _affine(kind: int, wide: bool) -> Callable[..., None]:
    fallback = f"affine_{_NAMES[kind]}{'_par' if wide else ''}"
    run_c = _c.affine

    def affine(
        src: Any, dst: Any, scale: Any, shift: Any, res: Any, has_res: bool, channels: int, inner: int, params: Any
    ) -> None:
        threads = jit.THREADS if wide else 1
        if run_c(kind, threads, src, dst, scale, shift, res, has_res, channels, inner, params) is NotImplemented:
            getattr(load_numba("epilogue"), fallback)(src, dst, scale, shift, res, has_res, channels, inner, params)

    return affine


BIAS = [_bias(kind, False) for kind in range(len(_NAMES))]
BIAS_PAR = [_bias(kind, True) for kind in range(len(_NAMES))]
AFFINE = [_affine(kind, False) for kind in range(len(_NAMES))]
AFFINE_PAR = [_affine(kind, True) for kind in range(len(_NAMES))]



def _unary(fn: int, name: str, wide: bool) -> Callable[[Any, Any], None]:
    fallback = f"{name}{'_par' if wide else ''}"
    run_c = _c.unary

    def unary(x: Any, y: Any) -> None:
        if run_c(fn, jit.THREADS if wide else 1, x, y) is NotImplemented:
            getattr(load_numba("epilogue"), fallback)(x, y)

    unary.__name__ = fallback
    return unary


erf, tanh, gelu, gelu_tanh = (_unary(fn, name, False) for fn, name in enumerate(("erf", "tanh", "gelu", "gelu_tanh")))
erf_par, tanh_par, gelu_par, gelu_tanh_par = (
    _unary(fn, name, True) for fn, name in enumerate(("erf", "tanh", "gelu", "gelu_tanh"))
)


def _binary(op: int, name: str) -> Callable[[Any, Any, Any, int], None]:
    run_c = _c.binary

    def binary(a: Any, b: Any, out: Any, mode: int) -> None:
        if run_c(op, a, b, out, mode) is NotImplemented:
            load_numba("epilogue").BINARY[name](a, b, out, mode)

    return binary


BINARY = {name: _binary(op, name) for op, name in enumerate(("add", "subtract", "multiply", "divide"))}


def __getattr__(name: str) -> Any:
    return getattr(load_numba("epilogue"), name)
