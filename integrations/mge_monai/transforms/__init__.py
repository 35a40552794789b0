"""Level-aware MONAI transforms."""

from __future__ import annotations

from .level import RestrictLevel, RestrictLeveld

__all__ = ["RestrictLevel", "RestrictLeveld"]
