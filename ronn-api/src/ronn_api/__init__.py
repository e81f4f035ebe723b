"""The ``ronn`` command line, serving and integrations."""

from __future__ import annotations

__version__ = "0.1.0"
