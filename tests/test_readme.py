from __future__ import annotations

import json
import re
import sys
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
    trainer = namespace["trainer"]  # the MONAI snippet, the last to define `trainer`
    # The default budget: more, cheaper iterations than the 2 epochs of 2, in whole epochs.
    assert trainer.cost.steps == trainer.multiscale.built_strategy.total_steps == 2 * trainer.state.max_epochs > 4
    _check_tensorboard_scalars(tmp_path / "runs", trainer)
    # The MRI snippet: MCLoss + EILoss, as tests/deepinv/test_mri.py trains them online and offline.
    mri = namespace["mri_trainer"]
    assert mri.cost.steps == 2 and mri.built_strategy.name == "mge"
    assert {k: len(v) for k, v in mri.loss_history.items()} == {"MCLoss": 2, "EILoss": 2}
    assert all(value > 0 for values in mri.loss_history.values() for value in values)
    # The 3D segmentation snippet, as tests/monai/test_real_pipelines.py trains it.
    assert namespace["segmenter"].multiscale.label_rule.rule == "mode"
    assert namespace["unet"].dimensions == 3
    assert 0.5 < namespace["segmenter"].state.metrics["train_acc"] <= 1
    assert "load_network(" in text and namespace["x_hat"].shape == (1, 1, 128, 128)  # the trained network back


def _check_tensorboard_scalars(log_dir: Path, trainer) -> None:
    """The MONAI snippet's TensorBoardStatsHandler wrote the loss and the multiscale scalars of every iteration."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"Loss", "mge_stage", "mge_level", "mge_term_0", "mge_saving", "mge_work_units", "mge_flops"} <= tags
    levels = [(e.step, e.value) for e in events.Scalars("mge_level")]
    strategy = trainer.multiscale.built_strategy
    assert levels == [(i + 1, float(strategy.plan(i).level)) for i in range(trainer.cost.steps)]
    assert events.Scalars("mge_saving")[-1].value == pytest.approx(trainer.cost.saving, rel=1e-6)


def test_readme_documents_every_logged_scalar() -> None:
    from mge_plugins.scalars import SCALAR_KEYS

    text = README.read_text()
    for key in SCALAR_KEYS:
        assert f"`{key.replace('{k}', '0')}`" in text, key


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
    found = []
    for document in module.DOCUMENTS:  # README.md and BENCHMARKS.md
        text = document.read_text()
        for name in re.findall(r"<!-- mge-train:(\w+) -->", text):
            found.append(name)
            assert module.document(name) == document
            data = json.loads(module.json_path(name).read_text())
            assert set(data["tasks"]) == set(module.TASKS)
            start, end = sys.modules["doc_blocks"].markers("mge-train", name)
            block = text.split(start, 1)[1].split(end, 1)[0]
            assert block == "\n" + module.table(data), (
                f"stale: rerun the runs and python scripts/refresh_readme.py DIR --name {name}"
            )
    assert {"table", "steps", "budget"} <= set(found) and len(found) == len(set(found))
