r"""The networks ``mge-train`` trains: small, BatchNorm-free, valid at every level.

Besides deepinv's DnCNN and the mesh-free denoiser, the backbones of the paper's released code,
rebuilt small: a U-Net and a residual network with a timestep embedding (:class:`TimeUNet`,
:class:`TimeResNet`) and an ESPCN-style super-resolution network (:class:`ESPCN`), plus deepinv's
own DRUNet and U-Net (``pretrained=None``, ``batch_norm=False``). Every one is wrapped in
``deepinv.models.ArtifactRemoval`` and called as ``model(y, physics)``.

**Timestep conditioning** (:class:`TimestepInput`). In training mode each sample gets a timestep
:math:`t \sim U(0, 0.1)` and the network's input is interpolated towards noise,
:math:`x_t = (1 - t)\,x + t\,n`; the network reads :math:`t` through a sinusoidal embedding. Both
are drawn from PyTorch's global random stream, which :func:`mge_plugins.mge_backward` replays for
the coarse half of every difference term, so both levels of a term see the same :math:`t`; the
noise is drawn at the finest grid and restricted to the level (:func:`mge_plugins.restricted_randn`,
unit std per pixel at every level), so they see the same noise too. In evaluation mode
:math:`t = 0` and the input is left as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import deepinv as dinv
import torch
import torch.nn.functional as F
from torch import nn

from mge_plugins import restricted_randn
from mge_plugins.meshfree import MeshFreeDenoiser, current_level

__all__ = [
    "ESPCN",
    "NETWORKS",
    "NetworkSpec",
    "TimeResNet",
    "TimeUNet",
    "TimestepInput",
    "build_network",
    "detect_network",
    "network_problem",
    "timestep_embedding",
]


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps, as in diffusion models.

    :param torch.Tensor t: ``(B,)`` timesteps in ``[0, 1]``.
    :param int dim: embedding size.
    :param float scale: ``t`` is embedded as ``scale * t`` (the diffusion convention: 1000 steps for ``[0, 1]``).
    :param float max_period: the longest period of the sines.
    :return: ``(B, dim)`` cosines then sines of geometrically spaced frequencies.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = scale * t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class TimestepInput(nn.Module):
    """Draws the timestep of each sample and interpolates the input towards noise (training only).

    Has no parameters. The draws come from PyTorch's global random stream (coupled across the levels
    of an MGE term, see the module's notes); the noise is drawn at the finest grid of the level the
    estimator is evaluating (:func:`mge_plugins.meshfree.current_level`) and restricted to it.

    :param float t_max: timesteps are drawn from ``U(0, t_max)``; 0 turns the conditioning off.
    """

    def __init__(self, t_max: float = 0.1) -> None:
        super().__init__()
        if not 0 <= t_max <= 1:
            raise ValueError(f"t_max must lie in [0, 1], got {t_max}")
        self.t_max = float(t_max)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's input and its timesteps.

        :param torch.Tensor x: ``(B, C, H, W)`` input.
        :param torch.Tensor, float, None t: timesteps of an input already interpolated (returned as
            ``(B,)``, ``x`` untouched); ``None`` draws them in training mode and uses 0 in evaluation mode.
        :return: ``(x_t, t)``.
        """
        batch = x.shape[0]
        if t is not None:
            return x, torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(batch)
        if not self.training or self.t_max == 0:
            return x, torch.zeros(batch, dtype=x.dtype, device=x.device)
        t = torch.rand(batch, dtype=x.dtype, device=x.device) * self.t_max
        level = current_level()
        fine_shape = (*x.shape[:2], *(s * 2**level for s in x.shape[2:]))
        noise = restricted_randn(fine_shape, level, keep_std=True, dtype=x.dtype, device=x.device)
        weight = t.view(batch, *(1,) * (x.dim() - 1))
        return (1 - weight) * x + weight * noise, t

    def extra_repr(self) -> str:
        """``t_max`` in the module's printout."""
        return f"t_max={self.t_max}"


class _TimestepEmbedding(nn.Module):
    """Sinusoidal embedding followed by a two-layer MLP."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, out), nn.SiLU(), nn.Linear(out, out))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.dim))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the timestep embedding added in between, and a skip."""

    def __init__(self, cin: int, cout: int, emb: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.silu(self.norm1(h))) + self.emb(emb)[:, :, None, None]
        return self.skip(h) + self.conv2(F.silu(self.norm2(out)))


class TimeUNet(nn.Module):
    """A small U-Net with a timestep embedding and GroupNorm, predicting the image residually.

    ``depth`` stride-2 downsamplings double the channels each; nearest upsampling, a convolution and
    a concatenated skip bring them back. Every side must be divisible by ``2**depth`` at every level
    it is trained at: ``2**(levels + depth)`` at the fine level.

    :param int channels: image channels (in and out).
    :param int width: channels at the finest scale.
    :param int depth: downsamplings.
    :param float t_max: timesteps of training are drawn from ``U(0, t_max)`` (:class:`TimestepInput`).
    """

    def __init__(self, channels: int = 1, width: int = 16, depth: int = 2, t_max: float = 0.1) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        emb = 4 * width
        widths = [width * 2**i for i in range(depth + 1)]
        self.timestep = TimestepInput(t_max)
        self.embed = _TimestepEmbedding(width, emb)
        self.inc = nn.Conv2d(channels, width, 3, padding=1)
        self.down_blocks = nn.ModuleList(_ResBlock(widths[i], widths[i], emb) for i in range(depth))
        self.downs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(depth))
        self.middle = _ResBlock(widths[depth], widths[depth], emb)
        self.ups = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1) for i in range(depth))
        self.up_blocks = nn.ModuleList(_ResBlock(2 * widths[i], widths[i], emb) for i in range(depth))
        self.out = nn.Sequential(_norm(width), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1))

    @property
    def size_multiple(self) -> int:
        """What every side of the input must be divisible by."""
        return 2**self.depth

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor | float | None = None, t: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The estimate of the image.

        :param torch.Tensor x: ``(B, C, H, W)`` input, sides divisible by :attr:`size_multiple`.
        :param sigma: the noise level deepinv passes to denoisers (not used).
        :param torch.Tensor t: timesteps of an input already interpolated; ``None``: see :class:`TimestepInput`.
        :raises ValueError: for a side not divisible by :attr:`size_multiple`, naming the level.
        """
        multiple = self.size_multiple
        if any(s % multiple for s in x.shape[2:]):
            level = current_level()
            sides = "x".join(map(str, x.shape[2:]))
            raise ValueError(
                f"TimeUNet's {self.depth} downsamplings need sides divisible by {multiple}, but the input at level "
                f"{level} is {sides} px; use fine sides divisible by {multiple * 2**level}, fewer levels or a smaller "
                "depth"
            )
        x_t, t = self.timestep(x, t)
        emb = self.embed(t)
        h = self.inc(x_t)
        skips = []
        for block, down in zip(self.down_blocks, self.downs):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.middle(h, emb)
        for i in reversed(range(self.depth)):
            h = self.ups[i](F.interpolate(h, scale_factor=2, mode="nearest"))
            h = self.up_blocks[i](torch.cat([h, skips[i]], dim=1), emb)
        return x_t + self.out(h)


class _TimeResidualBlock(nn.Module):
    """conv, + timestep embedding, layer norm (GroupNorm with one group), leaky ReLU, conv."""

    def __init__(self, width: int, emb: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.emb = nn.Linear(emb, width)
        self.norm = nn.GroupNorm(1, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        q = self.conv1(h) + self.emb(emb)[:, :, None, None]
        return self.conv2(F.leaky_relu(self.norm(q), negative_slope=0.2))


class TimeResNet(nn.Module):
    """A residual network with a timestep embedding, predicting the image residually; any input size.

    :param int channels: image channels (in and out).
    :param int width: hidden channels.
    :param int depth: residual blocks.
    :param float t_max: timesteps of training are drawn from ``U(0, t_max)`` (:class:`TimestepInput`).
    """

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 2, t_max: float = 0.1) -> None:
        super().__init__()
        self.timestep = TimestepInput(t_max)
        self.embed = _TimestepEmbedding(width, width)
        self.open = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(_TimeResidualBlock(width, width) for _ in range(depth))
        self.close = nn.Conv2d(width, channels, 1)

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor | float | None = None, t: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The estimate of the image.

        :param torch.Tensor x: ``(B, C, H, W)`` input.
        :param sigma: the noise level deepinv passes to denoisers (not used).
        :param torch.Tensor t: timesteps of an input already interpolated; ``None``: see :class:`TimestepInput`.
        """
        x_t, t = self.timestep(x, t)
        emb = self.embed(t)
        h = self.open(x_t)
        for block in self.blocks:
            h = h + block(h, emb)
        return x_t + self.close(h)


class ESPCN(nn.Module):
    """ESPCN-style super-resolution: convolutions at the low resolution, then a PixelShuffle by ``factor``.

    Maps a low-resolution image to one ``factor`` times larger; with ``residual`` it predicts the
    correction to the bilinear upsampling of its input. Any input size.

    :param int channels: image channels (in and out).
    :param int factor: upsampling factor.
    :param int width: hidden channels.
    :param int depth: convolutions (5x5 first, then 3x3), at least 2.
    :param bool residual: add the bilinear upsampling of the input to the output.
    """

    def __init__(
        self, channels: int = 1, factor: int = 2, width: int = 32, depth: int = 3, residual: bool = True
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2, got {depth}")
        self.factor, self.residual = factor, residual
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 5, padding=2), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(width, channels * factor**2, 3, padding=1), nn.PixelShuffle(factor)]
        self.features = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """The image, ``factor`` times larger than ``y``.

        :param torch.Tensor y: ``(B, C, h, w)`` low-resolution input.
        :param sigma: the noise level deepinv passes to denoisers (not used).
        """
        out = self.features(y)
        if self.residual:
            out = out + F.interpolate(y, scale_factor=self.factor, mode="bilinear", align_corners=False)
        return out


@dataclass(frozen=True)
class NetworkSpec:
    """How ``mge-train`` builds a network, and how it recognises it in saved weights.

    :param str description: one line for ``--help``.
    :param Callable build: ``build(channels, width, depth) -> torch.nn.Module``, the backbone.
    :param int width: default ``width`` (what it means is the network's: hidden or finest-scale channels).
    :param int depth: default ``depth`` (convolutions, blocks or downsamplings).
    :param str key: a state-dict key only this backbone has (under ``backbone_net.``).
    :param Callable channels: ``channels(weight) -> int``, the image channels from the weight under ``key``.
    :param str mode: ``ArtifactRemoval`` mode: ``"adjoint"`` (the network sees ``A^T y``) or ``"direct"`` (``y``).
    :param tuple[str], None tasks: the only tasks it trains (``None``: every task).
    :param Callable size_multiple: ``size_multiple(depth) -> int``, what every side must be divisible by at
        every level (1: any size).
    """

    description: str
    build: Callable[[int, int, int], nn.Module]
    width: int
    depth: int
    key: str
    channels: Callable[[torch.Tensor], int] = lambda weight: int(weight.shape[1])
    mode: str = "adjoint"
    tasks: tuple[str, ...] | None = None
    size_multiple: Callable[[int], int] = lambda depth: 1


def _drunet(channels: int, width: int, depth: int) -> nn.Module:
    return dinv.models.DRUNet(
        channels, channels, nc=(width, 2 * width, 4 * width, 8 * width), nb=depth, pretrained=None
    )


def _dinv_unet(channels: int, width: int, depth: int) -> nn.Module:
    widths = tuple(width * 2**i for i in range(depth))
    return dinv.models.UNet(channels, channels, batch_norm=False, scales=depth, channels_per_scale=widths)


NETWORKS: dict[str, NetworkSpec] = {
    "dncnn": NetworkSpec(
        "deepinv's DnCNN (5 convolutions, 32 channels)",
        lambda c, w, d: dinv.models.DnCNN(c, c, depth=d, nf=w, pretrained=None),
        width=32, depth=5, key="in_conv.weight",
    ),
    "meshfree": NetworkSpec(
        "mesh-free convolutions: one operator at every level (5 layers, 32 channels)",
        lambda c, w, d: MeshFreeDenoiser(c, width=w, depth=d),
        width=32, depth=5, key="body.0.weight",
    ),
    "unet": NetworkSpec(
        "U-Net with timestep embedding, GroupNorm (2 downsamplings, 16 channels; sides divisible by 4)",
        lambda c, w, d: TimeUNet(c, width=w, depth=d),
        width=16, depth=2, key="inc.weight", size_multiple=lambda depth: 2**depth,
    ),
    "resnet": NetworkSpec(
        "residual network with timestep embedding (2 blocks, 32 channels)",
        lambda c, w, d: TimeResNet(c, width=w, depth=d),
        width=32, depth=2, key="open.weight",
    ),
    "espcn": NetworkSpec(
        "ESPCN: convolutions, then PixelShuffle from the low-resolution measurement (sr only)",
        lambda c, w, d: ESPCN(c, factor=2, width=w, depth=d),
        width=32, depth=3, key="features.0.weight", mode="direct", tasks=("sr",),
    ),
    "drunet": NetworkSpec(
        "deepinv's DRUNet, untrained (8 to 64 channels, 1 block per scale; pads sides to 16)",
        _drunet, width=8, depth=1, key="m_head.weight", channels=lambda weight: int(weight.shape[1]) - 1,
    ),
    "dinv-unet": NetworkSpec(
        "deepinv's UNet without BatchNorm (3 scales, 16 to 64 channels; pads sides to 4)",
        _dinv_unet, width=16, depth=3, key="Conv1.0.weight",
    ),
}  # fmt: skip
"""The networks of ``mge-train --network``, by name."""


def _spec(network: str) -> NetworkSpec:
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; use one of {', '.join(map(repr, NETWORKS))}")
    return NETWORKS[network]


def build_network(
    network: str, channels: int = 1, *, width: int | None = None, depth: int | None = None, device: str = "cpu"
) -> nn.Module:
    """The network ``network`` in ``deepinv.models.ArtifactRemoval``, called as ``model(y, physics)``.

    :param str network: a name of :data:`NETWORKS`.
    :param int channels: image channels.
    :param int, None width: channels (``None``: the network's default).
    :param int, None depth: convolutions, blocks or downsamplings (``None``: the network's default).
    :param str device: where to build it.
    :raises ValueError: for an unknown name, listing the known ones.
    """
    spec = _spec(network)
    backbone = spec.build(channels, spec.width if width is None else width, spec.depth if depth is None else depth)
    return dinv.models.ArtifactRemoval(backbone.to(device), mode=spec.mode, device=device)


def detect_network(state: dict[str, torch.Tensor]) -> tuple[str, int]:
    """Which network of :data:`NETWORKS` saved ``state``, and its image channels.

    :param dict state: the state dict of a network of :func:`build_network`.
    :raises ValueError: when no known network has these weights.
    :return: ``(name, channels)``.
    """
    for name, spec in NETWORKS.items():
        weight = state.get(f"backbone_net.{spec.key}")
        if weight is not None:
            return name, spec.channels(weight)
    raise ValueError(
        f"these weights are none of mge-train's networks ({', '.join(NETWORKS)}); load them into the network that "
        "saved them"
    )


def network_problem(network: str, task: str, size: int, levels: int) -> str | None:
    """Why ``mge-train`` cannot train ``network`` on ``task`` at this size and these levels, or ``None``.

    :param str network: a name of :data:`NETWORKS`.
    :param str task: the task's name.
    :param int size: fine crop side.
    :param int levels: coarser levels.
    :return: one line naming the fix, or ``None``.
    """
    spec = _spec(network)
    if spec.tasks is not None and task not in spec.tasks:
        others = ", ".join(n for n, s in NETWORKS.items() if s.tasks is None)
        return (
            f"--network {network} maps a low-resolution measurement to a larger image, so it trains only "
            f"{', '.join(spec.tasks)}; use one of {others} for {task}"
        )
    multiple = spec.size_multiple(spec.depth)
    unit = multiple * 2**levels
    if size % unit:
        valid = max(unit, size // unit * unit)
        return (
            f"--network {network} needs sides divisible by {multiple} at every level, but --size {size} gives "
            f"{size / 2**levels:g} px at level {levels}; use --size {valid} or fewer --levels"
        )
    return None
