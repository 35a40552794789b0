"""Every study table in BENCHMARKS.md is what its script writes from the results committed beside it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def report_module():
    spec = importlib.util.spec_from_file_location("fms_report", ROOT / "scripts" / "fms_report.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_study_blocks_equal_the_reports_of_their_committed_results() -> None:
    document = (ROOT / "BENCHMARKS.md").read_text()
    blocks = re.findall(r"<!-- study:(\w+) -->\n(.*?)<!-- /study:\1 -->", document, flags=re.S)
    assert blocks, "BENCHMARKS.md has no study block"
    fms_report = report_module()
    for name, text in blocks:
        results = ROOT / "docs" / "study" / f"{name}.jsonl"
        assert results.exists(), f"block {name} has no {results}"
        assert text == fms_report.report(fms_report.load([results])), (
            f"BENCHMARKS.md block {name} is stale: python scripts/fms_report.py docs/study/{name}.jsonl "
            f"--into BENCHMARKS.md --block {name}"
        )


def test_a_stale_block_is_detected(tmp_path: Path) -> None:
    fms_report = report_module()
    path = tmp_path / "doc.md"
    path.write_text("before\n<!-- study:x -->\nold\n<!-- /study:x -->\nafter\n")
    fms_report.replace_block(path, "x", "new\n")
    assert path.read_text() == "before\n<!-- study:x -->\nnew\n<!-- /study:x -->\nafter\n"
