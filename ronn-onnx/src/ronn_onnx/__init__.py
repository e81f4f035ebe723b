"""ONNX loading, validation, shape inference and saving for ronn."""

from __future__ import annotations

__version__ = "0.1.0"


def load_model(source, options=None):  # noqa: ANN001, ANN201 - thin re-export
    """Load an ONNX model (path, bytes or ModelProto) into ronn's IR."""
    from .loader import load_model as _load

    return _load(source, options)


def save_model(model, path, **options):  # noqa: ANN001, ANN003, ANN201
    """Save ronn's IR as an ONNX file."""
    from .loader import save_model as _save

    _save(model, path, **options)
