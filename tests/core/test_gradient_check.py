"""The step's gradient check: its verdict on both paths, gradients left bit for bit, names on failure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mge_plugins.gradient_check as gradient_check
from mge_plugins import NonFiniteError, mge_step
from mge_plugins.config import MGEConfig
from mge_plugins.gradient_check import GradientCheck, any_nonfinite_flag

PATHS = ["fused-kernel", "norm-per-tensor"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "norm-per-tensor":  # every gradient above the fused kernel's size limit
        monkeypatch.setattr(gradient_check, "FUSED_CHECK_MAX_ELEMENTS", 0)
    return request.param


@pytest.mark.parametrize("fill", [0.5, float("nan"), float("inf"), -float("inf"), 1e30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_the_verdict_is_a_nan_or_inf_entry_on_both_paths(path: str, fill: float, dtype: torch.dtype) -> None:
    grads = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2, 2).double()]
    grads[1] = grads[1].to(dtype)
    grads[1][2] = fill  # 1e30: finite in float32 and float64 (its squared norm overflows float32), inf in half
    expected = not bool(torch.isfinite(grads[1]).all())
    assert bool(any_nonfinite_flag(grads)) == expected
    assert expected == (fill != 0.5 and (fill != 1e30 or dtype == torch.float16))


def test_a_huge_finite_gradient_passes_where_its_norm_overflows(path: str) -> None:
    grads = [torch.full((4,), 1e30)]  # its 2-norm overflows float32, every entry is finite
    assert not torch.isfinite(torch.linalg.vector_norm(grads[0]))
    assert float(any_nonfinite_flag(grads)) == 0.0


def test_the_check_leaves_every_gradient_bit_for_bit(path: str) -> None:
    tiny = torch.finfo(torch.float32).tiny
    grads = [torch.tensor([-0.0, 0.0, tiny / 4, -3.5e38, 1.0, float("nan")]), torch.randn(7)]
    before = [g.clone() for g in grads]
    assert float(any_nonfinite_flag(grads)) == 1.0
    for g, b in zip(grads, before, strict=True):
        assert torch.equal(g.view(torch.int32), b.view(torch.int32))  # signed zeros, subnormals and NaN bits too


def test_no_gradients_pass() -> None:
    assert float(any_nonfinite_flag([])) == 0.0


def test_gradients_in_a_graph_are_not_written_to() -> None:
    w = torch.ones(3, requires_grad=True)
    (grad,) = torch.autograd.grad((w**3).sum(), w, create_graph=True)
    assert grad.requires_grad
    version = grad._version
    assert float(any_nonfinite_flag([grad])) == 0.0
    assert grad._version == version  # not written in place, on either path


def test_names_are_looked_up_only_on_failure_and_from_the_module() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 1, 3))
    extra = nn.Parameter(torch.zeros(2))  # updated by the optimizer, not a parameter of the model
    for p in (*model.parameters(), extra):
        p.grad = torch.zeros_like(p)
    check = GradientCheck([*model.parameters(), extra], names=model)
    assert float(check.flag()) == 0.0 and check.first_nonfinite() is None
    model[1].weight.grad[0, 0, 0, 0] = float("nan")
    assert float(check.flag()) == 1.0 and check.first_nonfinite() == "1.weight"
    model[1].weight.grad.zero_()
    extra.grad[1] = float("inf")
    assert check.first_nonfinite() == "parameter 4"
    assert GradientCheck(model.named_parameters()).first_nonfinite() is None


def test_mge_step_checks_what_its_optimizer_updates() -> None:
    # A frozen layer's NaN gradient is not the step's: the optimizer does not update it.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1))
    optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1)
    x = torch.rand(8, 1, 16, 16)
    config = MGEConfig(levels=1, batch_size=2)

    def poisoned(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        model[0].weight.register_hook(lambda g: torch.full_like(g, float("nan")))
        return nn.functional.mse_loss(prediction, target)

    before = model[1].weight.detach().clone()
    mge_step(model, optimizer, poisoned, (x, x), config)
    assert torch.isnan(model[0].weight.grad).all()  # the frozen layer's gradient is NaN indeed
    assert not torch.equal(model[1].weight, before)  # and the step was taken
    # The same NaN on a parameter the optimizer updates is refused and named.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteError, match=r"not finite .*\(first: 0\.weight\)"):
        mge_step(model, optimizer, poisoned, (x, x), config)
