"""What every entry point promises, tested once for all three (plain step, deepinv, MONAI).

Resumption after SIGKILL and two ranks against one process are exercised per host by
``tests/*/test_resume.py`` and ``tests/distributed``; they start subprocesses and stay there.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("deepinv")
pytest.importorskip("monai")
pytest.importorskip("ignite")

from mge_plugins.cost import step_work_units
from mge_plugins.host_step import DEFAULT_BUDGET

from .hosts import HOSTS, NeedsEightPixels, clean_images, conv_net

hosts = pytest.mark.parametrize("host", list(HOSTS))


def assert_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)


def assert_close(a: list[torch.Tensor], b: list[torch.Tensor], rtol: float = 1e-5) -> None:
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=rtol, atol=1e-7)


@hosts
def test_single_reproduces_the_host_bit_for_bit(host: str) -> None:
    images = clean_images(n=20)  # 8 + 8 + a short batch of 4
    stock = HOSTS[host].native(conv_net(), images)
    ours = HOSTS[host].train(conv_net(), images, strategy="single")
    assert_equal(stock.weights, ours.weights)
    assert ours.steps == 3


@hosts
@pytest.mark.filterwarnings("ignore:the per-term batches:UserWarning")  # equal terms cost more, as warned
def test_mge_on_one_shared_batch_equals_the_fine_gradient(host: str) -> None:
    images = clean_images(n=8)
    stock = HOSTS[host].native(conv_net(), images, lr=1.0)
    ours = HOSTS[host].train(conv_net(), images, lr=1.0, strategy="mge", levels=2, batch_sizes=[8, 8, 8])
    assert_close(stock.weights, ours.weights)
    untrained = [p.detach() for p in conv_net().parameters()]
    assert not all(torch.allclose(p, q) for p, q in zip(ours.weights, untrained))  # the step moved the weights


@hosts
@pytest.mark.filterwarnings("ignore:the per-term batches:UserWarning")
def test_mge_with_growing_terms_does_not_equal_the_fine_gradient(host: str) -> None:
    # The negative control of the identity above: different per-term batches give another estimate.
    images = clean_images(n=8)
    stock = HOSTS[host].native(conv_net(), images, lr=1.0)
    ours = HOSTS[host].train(conv_net(), images, lr=1.0, strategy="mge", levels=2, batch_sizes=[2, 4, 8])
    assert not all(torch.allclose(p, q, rtol=1e-5) for p, q in zip(stock.weights, ours.weights))


@hosts
@pytest.mark.parametrize("strategy", ["mge", "full-multiscale"])
def test_a_short_last_batch_trains(host: str, strategy: str) -> None:
    # 20 samples in batches of 8 with drop_last=False: the last batch holds 4 and caps the terms.
    result = HOSTS[host].train(conv_net(), clean_images(n=20), strategy=strategy, levels=1)
    assert result.steps == 3
    assert all(torch.isfinite(w).all() for w in result.weights)


@hosts
def test_batchnorm_is_warned_about(host: str) -> None:
    from mge_plugins.checks import warn_batchnorm

    with pytest.warns(UserWarning, match=r"1 BatchNorm layers \(BatchNorm2d\).*breaks the coupling"):
        warn_batchnorm(conv_net(batchnorm=True), "fix")
    if host == "plain":  # a hand-written loop calls warn_batchnorm itself; the hosts call it for you
        return
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        HOSTS[host].train(conv_net(batchnorm=True), clean_images(n=8), strategy="mge", levels=1)
    assert any("BatchNorm" in str(w.message) for w in caught)


@hosts
def test_a_network_failing_at_the_coarsest_level_is_reported_before_training(host: str) -> None:
    model = NeedsEightPixels()
    before = [p.detach().clone() for p in model.parameters()]
    if host == "plain":
        from mge_plugins import MultiscaleStep, build_strategy
        from mge_plugins.cost import CostMeter

        images = clean_images(n=8)
        step = MultiscaleStep(build_strategy("mge", levels=2, loaded_batch_size=8), CostMeter(baseline_batch_size=8))

        def level_loss(indices: slice, level: int) -> torch.Tensor:
            from mge_plugins import restrict

            x = restrict(images[indices], level)
            return torch.nn.functional.mse_loss(model(x), x)

        def train() -> None:
            step.run(0, 8, level_loss, model=model, input_shape=images.shape)
    else:

        def train() -> None:
            HOSTS[host].train(model, clean_images(n=8), strategy="mge", levels=2)

    failing = r"network fails at level 2 \(input \(4, 4\), fine \(16, 16\)\).*8 px"
    if host == "monai":  # MONAI fits the levels to the network: it trains with the deepest level that runs
        with pytest.warns(UserWarning, match=r"using levels=1 instead of the requested levels=2: the " + failing):
            train()
        return
    with pytest.raises(ValueError, match=failing):
        train()
    assert_equal(before, [p.detach() for p in model.parameters()])
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("host", ["deepinv", "monai"])
def test_adaptive_allocation_measures_and_replans(host: str) -> None:
    result = HOSTS[host].train(
        conv_net(), clean_images(n=24), strategy="mge", levels=2, allocation="adaptive", reestimate_every=1
    )
    assert result.steps == 3
    history = result.strategy.history
    assert [entry["from_step"] for entry in history] == [1, 2, 3]
    assert all(max(entry["batch_sizes"]) <= 8 and len(entry["difference_variances"]) == 2 for entry in history)


@pytest.mark.parametrize("host", ["deepinv", "monai"])
def test_adaptive_full_multiscale_replans_inside_the_fine_stage(host: str) -> None:
    options = {"strategy": "full-multiscale", "levels": 1, "allocation": "adaptive", "reestimate_every": 1}
    result = HOSTS[host].train(conv_net(), clean_images(n=64), **options)
    fine = result.strategy.schedule.stages[-1]  # the coarse stage has no MGE level to allocate
    assert result.steps == 8 and (fine.start, fine.stop) == (5, 8)
    history = result.strategy.history
    assert [(entry["stage"], entry["from_step"]) for entry in history] == [(1, 6), (1, 7)]
    assert all(max(entry["batch_sizes"]) <= 8 and len(entry["difference_variances"]) == 1 for entry in history)


@pytest.mark.parametrize("host", ["deepinv", "monai"])
@pytest.mark.parametrize("budget", ["compute", DEFAULT_BUDGET])
def test_a_compute_budget_runs_more_cheaper_steps_within_its_share_of_the_single_scale_work(
    host: str, budget: str | float, capsys
) -> None:
    # 8 epochs of 2 single-scale steps of 8 samples: the budget is a share of 16 such steps.
    result = HOSTS[host].train(
        conv_net(), clean_images(n=16), strategy="full-multiscale", levels=1, budget=budget, epochs=8
    )
    total = result.strategy.total_steps
    plans = [result.strategy.plan(t) for t in range(total)]
    work = sum(step_work_units(p.batch_sizes, base_level=p.level, spatial_dims=2) for p in plans)
    share = 1.0 if budget == "compute" else budget
    step = max(p.batch_sizes[0] for p in plans) * 1.5  # the work of one step, at most
    assert result.steps == total and total != 16  # more, or fewer, cheaper steps than the planned 16
    if host == "deepinv":  # stops after exactly `total` steps: the share, to within one step
        assert abs(work - share * 16 * 8) <= step
    else:  # ignite ends runs between epochs (of 2 steps): whole epochs, no more than one step over the share
        assert total % 2 == 0 and share * 16 * 8 - 3 * step <= work <= share * 16 * 8 + step
    assert f"budget={budget!r}: full-multiscale runs {total}" in capsys.readouterr().out


def test_both_hosts_default_to_the_measured_budget() -> None:
    import inspect

    from mge_deepinv import MultiscaleTrainer
    from mge_monai import MultiscaleIteration

    assert MultiscaleTrainer.budget == DEFAULT_BUDGET == 0.33
    assert inspect.signature(MultiscaleIteration).parameters["budget"].default == DEFAULT_BUDGET
