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


def start_child(script: Path, *args: str) -> subprocess.Popen:
    """Start ``script`` in the background (finish it with :func:`finish`)."""
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait for a child started by :func:`start_child`; fail with its stderr when it failed."""
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]


def run_child(script: Path, *args: str, timeout: float = 120) -> None:
    """Run ``script`` to completion; fail with its stderr when it fails."""
    finish(start_child(script, *args), timeout)


def kill_after_checkpoint(script: Path, *args: str, folder: Path, pattern: str, timeout: float = 120) -> int:
    """Start ``script``, wait until a file matching ``pattern`` appears under ``folder``, SIGKILL it.

    Returns:
        The child's return code (``-SIGKILL``). Fails if the child ended before it was killed.
    """
    process = start_child(script, *args)
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
