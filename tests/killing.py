"""Run a training script in a child process and kill it with SIGKILL once it has checkpointed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_env() -> dict[str, str]:
    """The environment of a child process that imports this checkout's packages first."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "integrations")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_child(script: Path, *args: str, timeout: float = 120) -> None:
    """Run ``script`` to completion; fail with its stderr when it fails."""
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout, env=child_env()
    )
    assert result.returncode == 0, result.stderr[-3000:]


def kill_after_checkpoint(script: Path, *args: str, folder: Path, pattern: str, timeout: float = 120) -> int:
    """Start ``script``, wait until a file matching ``pattern`` appears under ``folder``, SIGKILL it.

    Returns:
        The child's return code (``-SIGKILL``). Fails if the child ended before it was killed.
    """
    process = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env()
    )
    deadline = time.monotonic() + timeout
    try:
        while not list(folder.rglob(pattern)):
            if process.poll() is not None:
                raise AssertionError(f"the training process ended before it checkpointed: {process.stderr.read()!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern} under {folder} after {timeout} s")
            time.sleep(0.005)
        assert process.poll() is None, "the training process finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
