"""The names of the paper's released code: its training modes, its tasks and its run names.

The paper ("Multiscale Training of Convolutional Neural Networks") trains with
``--mode single|multiscale|fullmultiscale`` and names each run
``{task}_{dataset}_{network}_{mode}_run{id}`` (e.g. ``denoising_cifar10_unet_multiscale_run1``), with
the tasks ``denoising``, ``deblurring``, ``inpainting`` and ``superresolution``. ``mge-train --mode``
and ``--naming paper`` accept and write these names.
"""

from __future__ import annotations

import re

__all__ = ["PAPER_MODES", "PAPER_TASKS", "paper_mode", "paper_run_name"]

PAPER_MODES: dict[str, str] = {"single": "single", "multiscale": "mge", "fullmultiscale": "full-multiscale"}
"""The paper's ``--mode`` names and the strategy each one is (:func:`mge_plugins.available_strategies`)."""

PAPER_TASKS: dict[str, str] = {
    "denoise": "denoising",
    "deblur": "deblurring",
    "inpaint": "inpainting",
    "sr": "superresolution",
}
"""``mge-train``'s task names and the paper's."""


def paper_mode(strategy: str) -> str:
    """The paper's name of a strategy (``"mge"`` is ``"multiscale"``), or the strategy's own name if it has none.

    :param str strategy: a strategy name.
    """
    return next((mode for mode, name in PAPER_MODES.items() if name == strategy), strategy)


def _part(text: str) -> str:
    """``text`` as one part of a name: runs of characters other than letters, digits, ``.`` and ``-`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "none"


def paper_run_name(task: str, dataset: str, network: str, strategy: str, run: int) -> str:
    """The paper's name of a run: ``{task}_{dataset}_{network}_{mode}_run{run}``.

    :param str task: ``mge-train``'s task name (``"denoise"``) or any other (written as given).
    :param str dataset: the data set's name.
    :param str network: the network's name.
    :param str strategy: the strategy trained (written with its paper name, :func:`paper_mode`).
    :param int run: the run's number (``mge-train`` uses ``--seed``).
    :return: e.g. ``"denoising_skimage_unet_fullmultiscale_run0"``.
    """
    parts = (PAPER_TASKS.get(task, task), dataset, network, paper_mode(strategy))
    return "_".join(map(_part, parts)) + f"_run{run}"
