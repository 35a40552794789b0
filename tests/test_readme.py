from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippets_run(tmp_path: Path, monkeypatch, capsys) -> None:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # the snippets read and write relative paths, as in a fresh clone
    if "load_network(" in text:  # the quick start loads back what `mge-train denoise` wrote: a tiny run of it
        pytest.importorskip("deepinv")
        from mge_deepinv.cli import main

        main(["denoise", "--steps", "4", "--evals", "1", "--size", "32", "--no-baseline", "--out", "results"])
        capsys.readouterr()
    namespace: dict = {}
    for block in blocks:  # later snippets build on earlier ones, as a reader would run them
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["stats"].batch_sizes == (2, 8, 32)
    fused = namespace["fused_stats"]  # the fused-passes snippet: 2 + 4/4 + 8/16 fine-sample units
    assert fused.batch_sizes == (2, 4, 8) and fused.cost.work_units == 3.5
    assert namespace["trainer"].cost.steps == 4  # the MONAI snippet, the last to define `trainer`
    assert namespace["segmenter"].multiscale.label_rule.rule == "mode"  # the segmentation snippet
    assert 0.5 < namespace["segmenter"].state.metrics["train_acc"] <= 1
    assert "load_network(" in text and namespace["x_hat"].shape == (1, 1, 128, 128)  # the trained network back


def test_readme_states_what_the_quick_start_costs() -> None:
    quick_start = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "2-core" in quick_start and re.search(r"\d+ min", quick_start)  # measured durations
    assert "CUDA" in quick_start and "GB" in quick_start  # what the default torch build downloads
    assert 'pip install -e ".[all]"' in quick_start  # how to keep an existing torch


def test_readme_quick_start_commands_match_the_project() -> None:
    text = README.read_text()
    assert 'pip install -c constraints.txt -e ".[all]" && mge-train denoise' in text
    assert 'pip install -c constraints.txt -e ".[all]" && python -m pytest' in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "-c constraints.txt" in ci and "python -m pytest" in ci


def test_the_mge_train_table_is_what_its_committed_runs_give() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("refresh_readme", README.parent / "scripts" / "refresh_readme.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    data = json.loads(module.JSON.read_text())
    assert set(data["tasks"]) == set(module.TASKS)
    text = README.read_text()
    block = text.split(module.START, 1)[1].split(module.END, 1)[0]
    assert block == "\n" + module.table(data), "stale: rerun the runs and python scripts/refresh_readme.py DIR"
