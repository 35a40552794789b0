"""Handlers for MONAI engines."""

from __future__ import annotations

from .checkpoint import AtomicCheckpointSaver, make_atomic

__all__ = ["AtomicCheckpointSaver", "make_atomic"]
