"""``python -m mge_bench``: the same as the ``mge-bench`` command."""

from __future__ import annotations

from .cli import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
