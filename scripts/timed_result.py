"""What the scripts that publish seconds share: the load check, the saved files and ``--render``.

A timed result is a dict with the command, date, torch version, the machine's load during the
measurement and ``"valid"`` (the load never exceeded the cores), plus the script's own entries.
Its Markdown starts with the command and the load, and quotes no seconds when it is not valid.
``--render JSON --into FILE --block NAME`` rewrites the text between ``<!-- KIND:NAME -->`` and
``<!-- /KIND:NAME -->`` from a saved result (``tests/test_benchmarks_doc.py`` checks those blocks).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from doc_blocks import replace_block

from mge_plugins.diagnostics import LoadMonitor

__all__ = ["add_render_options", "header", "render_requested", "timed", "write"]

INVALID = "**Invalid timing**: the load exceeded the cores during the run; no seconds are quoted."


def add_render_options(parser: argparse.ArgumentParser) -> None:
    """``--render``, ``--into`` and ``--block``."""
    parser.add_argument("--render", type=Path, help="a saved JSON result to render instead of measuring")
    parser.add_argument("--into", type=Path, help="with --render: the document whose block to rewrite")
    parser.add_argument("--block", help="with --render: the marker name")


def render_requested(args: argparse.Namespace, kind: str, markdown: Callable[[dict], str]) -> bool:
    """With ``--render``, rewrite the ``kind`` block from the saved result and say so."""
    if args.render is None:
        return False
    if args.into is None or args.block is None:
        raise SystemExit("--render needs --into FILE and --block NAME")
    replace_block(args.into, kind, args.block, markdown(json.loads(args.render.read_text())))
    return True


def timed(measure: Callable[[], dict[str, Any]], interval: float = 5.0) -> dict[str, Any]:
    """Run ``measure`` under a :class:`~mge_plugins.diagnostics.LoadMonitor`; its entries with the run's record."""
    with LoadMonitor(interval=interval) as monitor:
        entries = measure()
    report = monitor.report()
    return {
        "command": f"python scripts/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "load": report.to_dict(),
        "valid": report.quiet,
        **entries,
    }


def header(result: dict[str, Any]) -> list[str]:
    """The Markdown's first lines: the command and the load, and the refusal when the timing is invalid."""
    load = result["load"]
    lines = [f"Command: `{result['command']}`. Load: peak {load['peak_load']:.2f} on {load['cores']} cores.", ""]
    return lines if result["valid"] else [*lines, INVALID]


def write(out: str | Path, stem: str, result: dict[str, Any], markdown: Callable[[dict], str]) -> None:
    """``STEM.json`` and ``STEM.md`` under ``out``, and the Markdown on stdout."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (out / f"{stem}.md").write_text(text)
    print(text)
