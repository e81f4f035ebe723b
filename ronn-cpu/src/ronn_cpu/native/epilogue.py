"""Native epilogues behind :mod:`ronn_cpu.jit.epilogue`'s interface (``BIAS[kind]`` and so on).

Names not defined here (the unary and binary kernels) are the numba module's.
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


def __getattr__(name: str) -> Any:
    return getattr(load_numba("epilogue"), name)
