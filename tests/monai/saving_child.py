"""Checkpointing workers for the kill test: ``python saving_child.py SAVE_DIR PROGRESS``.

Imports torch, ignite and MONAI once; then, for each line ``run`` read from stdin, forks a worker,
prints ``pid PID``, waits for it and prints ``done STATUS`` (``-9`` after a ``SIGKILL``). A worker
resumes from the newest ``checkpoint_epoch=*.pt`` in ``SAVE_DIR`` through
:class:`VerifiedCheckpointLoader` and then runs one-iteration epochs as fast as it can, each
setting every weight of a 2 MB network and the metric ``score`` to the epoch number, under one
:class:`AtomicCheckpointSaver` that keeps one interval checkpoint (``n_saved=1``) and one
best-metric checkpoint (MONAI's default ``key_metric_n_saved=1``). After both saves of an epoch it
appends the epoch to ``PROGRESS``: a save listed there has completed.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from mge_monai import AtomicCheckpointSaver, VerifiedCheckpointLoader


def work(save_dir: Path, progress: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 512))

    def step(engine: Engine, batch: object) -> None:
        with torch.no_grad():
            for parameter in net.parameters():
                parameter.fill_(engine.state.epoch)
        engine.state.metrics["score"] = float(engine.state.epoch)

    engine = Engine(step)
    objects = {"net": net, "trainer": engine}
    saver = AtomicCheckpointSaver(
        str(save_dir), save_dict=objects, save_interval=1, n_saved=1, save_key_metric=True, key_metric_name="score"
    )
    saver.attach(engine)
    found = [
        (int(m.group(1)), p) for p in save_dir.glob("checkpoint_epoch=*.pt")
        if (m := re.fullmatch(r"checkpoint_epoch=(\d+)\.pt", p.name))
    ]  # fmt: skip
    if found:
        VerifiedCheckpointLoader(str(max(found)[1]), load_dict=objects).attach(engine)
    log = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: os.write(log, f"{e.state.epoch}\n".encode()))
    engine.run([0], max_epochs=10**6)


def main() -> None:
    save_dir, progress = Path(sys.argv[1]), Path(sys.argv[2])
    save_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # no thread pool exists before the forks
    for line in sys.stdin:
        if line.strip() != "run":
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                work(save_dir, progress)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"done {-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)}", flush=True)


if __name__ == "__main__":
    main()
