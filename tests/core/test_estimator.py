from __future__ import annotations

import pytest
import torch

from mge_plugins import CoupledRandomness, MGEConfig, mge_backward, restrict, restricted_randn, split_batch
from mge_plugins.cost import count_flops, measure_level_flops
from mge_plugins.diagnostics import SavedTensorMeter

from .nets import denoise_level_loss, flat_grad, small_net


def fine_gradient(model, level_loss, batch) -> torch.Tensor:
    model.zero_grad()
    level_loss(batch, 0).backward()
    return flat_grad(model).clone()


@pytest.mark.parametrize("dims, shape, levels", [(2, (6, 1, 32, 32), 3), (3, (3, 1, 16, 16, 16), 2)])
def test_same_batch_in_every_term_collapses_to_fine_gradient(dims, shape, levels) -> None:
    model = small_net(dims, dtype=torch.float64)
    x = torch.rand(shape, dtype=torch.float64)
    batch = (x + 0.1 * torch.randn_like(x), x)
    level_loss = denoise_level_loss(model)
    expected = fine_gradient(model, level_loss, batch)
    model.zero_grad()
    stats = mge_backward(level_loss, [batch] * (levels + 1))
    got = flat_grad(model)
    rel = (got - expected).norm() / expected.norm()
    assert rel < 1e-9, rel
    # The telescoped value collapses too; the fine loss is term 0's first half.
    assert stats.estimate == pytest.approx(level_loss(batch, 0).item(), rel=1e-12)
    assert stats.fine_loss == pytest.approx(level_loss(batch, 0).item(), rel=1e-15)
    assert stats.levels == levels


def test_same_batch_identity_in_float32() -> None:
    model = small_net(2)
    x = torch.rand(4, 1, 32, 32)
    batch = (x + 0.1 * torch.randn_like(x), x)
    level_loss = denoise_level_loss(model)
    expected = fine_gradient(model, level_loss, batch)
    model.zero_grad()
    mge_backward(level_loss, [batch] * 3)
    assert (flat_grad(model) - expected).norm() / expected.norm() < 1e-5


def test_independent_batches_are_unbiased_for_the_full_data_gradient() -> None:
    torch.manual_seed(1)
    model = small_net(2, dtype=torch.float64)
    n_data, sizes, draws = 48, (2, 6, 12), 400
    x = torch.rand(n_data, 1, 16, 16, dtype=torch.float64)
    data = (x + 0.2 * torch.randn_like(x), x)
    level_loss = denoise_level_loss(model)
    target = fine_gradient(model, level_loss, data)

    def draw(k: int):
        idx = torch.randperm(n_data)[: sizes[k]]
        return (data[0][idx], data[1][idx])

    estimates, coarse_only = [], []
    for _ in range(draws):
        model.zero_grad()
        mge_backward(level_loss, [draw(k) for k in range(len(sizes))])
        estimates.append(flat_grad(model).clone())
        model.zero_grad()
        level_loss(draw(2), 2).backward()  # the coarsest term alone: a biased estimator
        coarse_only.append(flat_grad(model).clone())
    est, coarse = torch.stack(estimates), torch.stack(coarse_only)
    # Tolerance: the mean of `draws` estimates lies within 4 standard errors (in norm) of its
    # expectation: ||mean - target||^2 <= 16 * trace(Cov) / draws.
    standard_error = (est.var(dim=0).sum() / draws).sqrt()
    assert (est.mean(0) - target).norm() < 4 * standard_error
    # The same test rejects the coarse-level gradient, so it has the power to fail.
    coarse_se = (coarse.var(dim=0).sum() / draws).sqrt()
    assert (coarse.mean(0) - target).norm() > 4 * coarse_se


def test_zero_levels_is_plain_backward_bitwise() -> None:
    model = small_net(2)
    x = torch.rand(8, 1, 16, 16)
    batch = (x + 0.1, x)
    level_loss = denoise_level_loss(model)
    expected = fine_gradient(model, level_loss, batch)
    model.zero_grad()
    stats = mge_backward(level_loss, [batch])
    assert torch.equal(flat_grad(model), expected)
    assert stats.term_values == (pytest.approx(stats.fine_loss),)


def test_stats_and_work_units() -> None:
    model = small_net(2)
    x = torch.rand(32, 1, 32, 32)
    level_loss = denoise_level_loss(model)
    batches = split_batch((x + 0.1, x), MGEConfig(levels=2, batch_size=2).batch_sizes)
    stats = mge_backward(level_loss, batches)
    assert stats.batch_sizes == (2, 8, 32)
    # 2 * (1 + 1/4) + 8 * (1/4 + 1/16) + 32 / 16
    assert stats.cost.work_units == pytest.approx(7.0)
    assert stats.cost.flops is None
    with torch.no_grad():
        t0 = level_loss(batches[0], 0) - level_loss(batches[0], 1)
        t2 = level_loss(batches[2], 2)
    assert stats.term_values[0] == pytest.approx(t0.item(), rel=1e-5)
    assert stats.term_values[2] == pytest.approx(t2.item(), rel=1e-5)


def test_reported_flops_equal_counted_flops_of_the_step() -> None:
    model = small_net(2, width=8)
    x = torch.rand(16, 1, 32, 32)
    level_loss = denoise_level_loss(model)
    per_sample = measure_level_flops(level_loss, (x[:1] + 0.1, x[:1]), 2, model.parameters())
    assert all(p.grad is None for p in model.parameters())  # probing leaves .grad alone
    assert per_sample[0] == pytest.approx(4 * per_sample[1]) and per_sample[1] == pytest.approx(4 * per_sample[2])
    batches = split_batch((x + 0.1, x), (1, 4, 16))
    stats = None

    def step() -> None:
        nonlocal stats
        stats = mge_backward(level_loss, batches, flops_per_sample=per_sample)

    counted = count_flops(step)
    assert stats.cost.flops == pytest.approx(counted, rel=1e-12)


def test_backward_hook_receives_each_signed_level_loss_once() -> None:
    model = small_net(2)
    x = torch.rand(8, 1, 16, 16)
    seen = []

    def backward(loss: torch.Tensor) -> None:
        seen.append(loss.detach().item())
        (loss * 2.0).backward()

    stats = mge_backward(denoise_level_loss(model), [(x, x)] * 3, backward=backward)
    # +l0, -l1 | +l1, -l2 | +l2: five passes whose pairs sum to the term values.
    assert len(seen) == 5
    assert [seen[0] + seen[1], seen[2] + seen[3], seen[4]] == pytest.approx(list(stats.term_values))
    assert seen[0] == pytest.approx(stats.fine_loss)


def test_no_sync_wraps_every_backward_pass_but_the_last() -> None:
    model = small_net(2)
    x = torch.rand(8, 1, 16, 16)
    events = []

    class NoSync:
        def __enter__(self):
            events.append("no_sync")

        def __exit__(self, *exc):
            return False

    def backward(loss: torch.Tensor) -> None:
        events.append("backward")
        loss.backward()

    mge_backward(denoise_level_loss(model), [(x, x)] * 3, backward=backward, no_sync=NoSync)
    assert events == ["no_sync", "backward"] * 4 + ["backward"]


def test_base_level_offsets_every_term() -> None:
    calls = []
    w = torch.ones((), requires_grad=True)

    def level_loss(batch, level):
        calls.append(level)
        return w * restrict(batch, level).mean()

    stats = mge_backward(level_loss, [torch.rand(2, 1, 16, 16)] * 2, base_level=1)
    assert calls == [1, 2, 2]
    assert stats.base_level == 1
    assert stats.cost.work_units == pytest.approx(2 * (1 / 4 + 1 / 16) + 2 / 16)


def test_level_by_level_backward_peaks_at_one_fine_pass() -> None:
    model = small_net(2, width=16)
    x = torch.rand(32, 1, 64, 64)
    level_loss = denoise_level_loss(model)
    batches = split_batch((x + 0.1, x), (2, 8, 32))

    sequential = SavedTensorMeter()
    live_at_backward = []
    with sequential.hooks():
        mge_backward(level_loss, batches, backward=lambda t: (live_at_backward.append(sequential.live), t.backward()))
    assert sequential.live == 0  # every graph freed

    at_once = SavedTensorMeter()
    with at_once.hooks():
        total = sum(
            (level_loss(b, k) - level_loss(b, k + 1)) if k < 2 else level_loss(b, k) for k, b in enumerate(batches)
        )
        total.backward()

    single_pass = []
    for k, b in enumerate(batches):
        for level in (k, k + 1) if k < 2 else (k,):
            meter = SavedTensorMeter()
            with meter.hooks():
                loss = level_loss(b, level)
            single_pass.append(meter.peak)
            del loss
    # Each level's graph alone is alive when it is backpropagated ...
    assert live_at_backward == single_pass
    # ... so the peak is the largest pass's: with sizes 2, 8, 32 every term's larger half costs 2
    # fine images, exactly one fine forward/backward of the finest batch (and < 30 % of the 7
    # fine-equivalents held at once).
    fine_only = SavedTensorMeter()
    with fine_only.hooks():
        loss = level_loss(batches[0], 0)
    del loss
    assert sequential.peak == max(single_pass) == fine_only.peak
    assert sequential.peak < 0.3 * at_once.peak


@pytest.mark.cuda
def test_cuda_peak_memory_of_term_by_term_backward() -> None:
    model = small_net(2, width=32).cuda()
    x = torch.rand(64, 1, 128, 128, device="cuda")
    level_loss = denoise_level_loss(model)
    batches = split_batch((x + 0.1, x), (4, 16, 64))

    def peak(fn) -> int:
        model.zero_grad(set_to_none=False)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    sequential = peak(lambda: mge_backward(level_loss, batches))
    fine_only = peak(lambda: level_loss(batches[0], 0).backward())
    at_once = peak(
        lambda: sum(
            (level_loss(b, k) - level_loss(b, k + 1)) if k < 2 else level_loss(b, k) for k, b in enumerate(batches)
        ).backward()
    )
    assert sequential < 0.4 * at_once
    # Passes cost 4, 1, 4, 1 and 4 fine-equivalents: the peak is one fine forward/backward of the
    # finest batch, plus allocator slack.
    assert sequential < 1.05 * fine_only


def test_coupling_replays_the_random_stream_for_both_halves() -> None:
    model = small_net(2)
    x = torch.rand(4, 1, 32, 32)
    noises = {}

    def level_loss(batch, level):
        noise = restricted_randn(batch.shape, level)
        noises.setdefault(level, []).append(noise)
        return (model(restrict(batch, level) + 0.1 * noise)).pow(2).mean()

    mge_backward(level_loss, [x, x, x])
    # Term 0 drew the same fine noise at levels 0 and 1; term 1 at levels 1 and 2.
    assert torch.equal(noises[1][0], restrict(noises[0][0], 1))
    assert torch.equal(noises[2][0], restrict(noises[1][1], 1))
    # Different terms draw fresh noise.
    assert not torch.equal(noises[1][0], noises[1][1])

    noises.clear()
    mge_backward(level_loss, [x, x], coupling=False)
    assert not torch.equal(noises[1][0], restrict(noises[0][0], 1))


def test_coupling_replays_a_callers_own_generator() -> None:
    generator = torch.Generator().manual_seed(3)
    w = torch.ones((), requires_grad=True)
    draws = []

    def level_loss(batch, level):
        draws.append(torch.rand(3, generator=generator))
        return w * batch.mean()

    x = torch.rand(2, 1, 4, 4)
    mge_backward(level_loss, [x, x], coupling=CoupledRandomness([generator]))
    assert torch.equal(draws[0], draws[1])
    draws.clear()
    mge_backward(level_loss, [x, x])  # global streams only: the caller's generator moves on
    assert not torch.equal(draws[0], draws[1])


def test_replay_before_capture_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before capture"):
        CoupledRandomness().replay()


def test_restricted_randn_has_the_coarse_noise_law() -> None:
    noise = restricted_randn((8, 1, 128, 128), 2, dtype=torch.float64)
    assert noise.shape == (8, 1, 32, 32)
    assert noise.std().item() == pytest.approx(0.25, rel=0.03)


def test_non_finite_term_names_term_and_levels() -> None:
    w = torch.ones((), requires_grad=True)

    def level_loss(batch, level):
        return w * (batch.mean() if level < 2 else torch.tensor(float("nan")))

    x = torch.rand(2, 1, 8, 8)
    match = r"MGE term 1 \(levels 1 - 2\): the loss at level 2 is nan.*no optimizer step"
    with pytest.raises(FloatingPointError, match=match):
        mge_backward(level_loss, [x, x, x])


@pytest.mark.parametrize(
    "level_loss, batches, match",
    [
        (lambda b, k: b.sum(), [], "batches is empty"),
        (lambda b, k: b.sum(), [torch.zeros(2, 1, 4, 4), torch.zeros(0, 1, 4, 4)], "empty batch"),
        (lambda b, k: b * 1.0, [torch.zeros(2, 1, 4, 4, requires_grad=True)], r"scalar tensor.*\.mean\(\)"),
        (lambda b, k: b.sum(), [torch.zeros(2, 1, 4, 4)], "does not require grad"),
    ],
)
def test_bad_estimator_inputs(level_loss, batches, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mge_backward(level_loss, batches)


@pytest.mark.parametrize("dims", [2, 3])
def test_restricted_randn_keep_std_keeps_unit_std_and_the_coupling(dims: int) -> None:
    shape = (4, 1, 64, 64) if dims == 2 else (2, 1, 32, 32, 32)
    torch.manual_seed(5)
    kept = restricted_randn(shape, 2, keep_std=True, dtype=torch.float64)
    torch.manual_seed(5)
    plain = restricted_randn(shape, 2, dtype=torch.float64)
    assert kept.std().item() == pytest.approx(1.0, rel=0.06)
    # Same draw, rescaled: the two halves of a term stay exactly coupled.
    torch.testing.assert_close(kept, plain * 2.0**dims, rtol=1e-14, atol=0)


def test_restricted_randn_keep_std_refuses_antialias() -> None:
    with pytest.raises(ValueError, match="use method='area'"):
        restricted_randn((1, 1, 8, 8), 1, method="antialias", keep_std=True)


def test_the_checks_read_on_a_cpu_give_the_stacked_read_values() -> None:
    from mge_plugins.estimator import _read_scalars

    values = [
        torch.tensor(0.1, dtype=torch.float16),
        torch.tensor(float("nan")),
        torch.tensor(-float("inf"), dtype=torch.float64),
        torch.tensor(1e30),
        torch.tensor(True),
        torch.tensor(False),
    ]
    stacked = torch.stack([v.to(torch.float64) for v in values]).tolist()
    read = _read_scalars(values)
    assert all(isinstance(v, float) for v in read)
    assert [repr(v) for v in read] == [repr(v) for v in stacked]  # NaN compares by its repr
