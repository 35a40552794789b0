from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippets_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:  # later snippets build on earlier ones, as a reader would run them
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["stats"].batch_sizes == (2, 8, 32)
    assert namespace["trainer"].cost.steps == 4  # the MONAI snippet, the last to define `trainer`
    assert namespace["segmenter"].multiscale.label_rule.rule == "mode"  # the segmentation snippet
    assert 0.5 < namespace["segmenter"].state.metrics["train_acc"] <= 1


def test_readme_quick_start_commands_match_the_project() -> None:
    text = README.read_text()
    assert 'pip install -c constraints.txt -e ".[all]" && mge-train denoise' in text
    assert 'pip install -c constraints.txt -e ".[all]" && python -m pytest' in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "-c constraints.txt" in ci and "python -m pytest" in ci
