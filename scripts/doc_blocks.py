"""Generated blocks in README.md and BENCHMARKS.md: the text between ``<!-- KIND:NAME -->`` markers.

Every published table sits between two markers and is rewritten only by the script that computes
it; the tests compare each block with what its script gives from the committed results.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["markers", "read_block", "replace_block"]


def markers(kind: str, name: str | None = None) -> tuple[str, str]:
    """The opening and closing markers of block ``kind:name`` (``kind`` alone without a name)."""
    label = kind if name is None else f"{kind}:{name}"
    return f"<!-- {label} -->", f"<!-- /{label} -->"


def read_block(document: str, kind: str, name: str | None = None) -> str:
    """The text between the markers of ``document`` (without the newline after the opening one)."""
    start, end = markers(kind, name)
    if start not in document or end not in document:
        raise SystemExit(f"no {start} ... {end} block; add the two markers where the text goes")
    return document.split(start, 1)[1].split(end, 1)[0].removeprefix("\n")


def replace_block(path: Path, kind: str, name: str | None, text: str) -> None:
    """Put ``text`` between the markers of ``path``.

    Raises:
        SystemExit: when the markers are missing, naming them.
    """
    document = path.read_text()
    start, end = markers(kind, name)
    if start not in document or end not in document:
        raise SystemExit(f"{path} has no {start} ... {end} block; add the two markers where the text goes")
    head, rest = document.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}{end}{tail}")
