"""mge-plugins adapter for DeepInverse (in development; the core lives in :mod:`mge_plugins`)."""

from __future__ import annotations

__all__: list[str] = []
