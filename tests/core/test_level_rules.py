from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mge_plugins import restrict
from mge_plugins.level_rules import LEVEL_RULES, LevelRule, infer_level_rule, resolve_level_rule, restrict_mode


def test_mode_of_a_known_block_pattern() -> None:
    label = torch.tensor(
        [
            [1, 1, 0, 0, 2, 2],
            [1, 0, 0, 2, 2, 5],
            [3, 3, 2, 2, 4, 1],
            [0, 3, 1, 2, 1, 4],
        ]
    )[None, None]
    # Blocks: {1,1,1,0} -> 1, {0,0,0,2} -> 0, {2,2,2,5} -> 2; {3,3,0,3} -> 3, {2,2,1,2} -> 2, {4,1,1,4} tie -> 4.
    assert restrict_mode(label).tolist() == [[[[1, 0, 2], [3, 2, 4]]]]


def test_mode_ties_go_to_the_first_sample_of_the_block() -> None:
    for block, first in (([[0, 1], [1, 0]], 0), ([[1, 0], [0, 1]], 1), ([[2, 7], [5, 3]], 2)):
        assert restrict_mode(torch.tensor(block)[None, None]).item() == first


def test_mode_in_3d_and_over_levels() -> None:
    block = torch.zeros(1, 1, 2, 2, 2, dtype=torch.long)
    block[0, 0, 1] = 1  # four ones, four zeros: a tie, to the first sample (0)
    block[0, 0, 0, 1, 1] = 1  # five ones
    assert restrict_mode(block).item() == 1
    x = torch.randint(0, 3, (2, 1, 8, 8, 8))
    assert torch.equal(restrict_mode(x, 2), restrict_mode(restrict_mode(x, 1), 1))
    assert restrict_mode(x, 3).shape == (2, 1, 1, 1, 1)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool, torch.float32])
def test_mode_keeps_the_dtype_and_only_takes_values_present(dtype: torch.dtype) -> None:
    x = torch.randint(0, 2 if dtype == torch.bool else 4, (2, 1, 16, 16)).to(dtype)
    out = restrict_mode(x, 2)
    assert out.dtype == dtype and out.shape == (2, 1, 4, 4)
    assert set(out.unique().tolist()) <= set(x.unique().tolist())


def test_area_restriction_of_a_label_is_soft_and_mode_is_not() -> None:
    label = (torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    soft = restrict(label, 1, "area")  # the control: why labels need their own rule
    assert not bool(((soft == 0) | (soft == 1)).all())
    hard = LevelRule("mode").apply(label, 1)
    assert bool(((hard == 0) | (hard == 1)).all())


def test_one_hot_label_stays_one_hot_and_per_channel_majority_does_not() -> None:
    classes = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    one_hot = F.one_hot(classes, 3).movedim(-1, 1).float()
    out = restrict_mode(one_hot, 2)
    assert out.shape == (2, 3, 4, 4)
    assert torch.equal(out.sum(1), torch.ones(2, 4, 4)) and bool(((out == 0) | (out == 1)).all())
    assert torch.equal(out.argmax(1, keepdim=True), restrict_mode(classes[:, None], 2))
    # The control: each channel's own majority (rounded area) leaves voxels with no class or two.
    per_channel = (restrict(one_hot, 1, "area") >= 0.5).float()
    assert not torch.equal(per_channel.sum(1), torch.ones(2, 8, 8))


def test_nested_multi_label_masks_stay_nested() -> None:
    whole = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2)) > 0.3
    core = whole & (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(3)) > 0.5)
    out = restrict_mode(torch.cat([whole, core], 1), 2)
    assert bool((out[:, 1] <= out[:, 0]).all())  # the core stays inside the whole tumour


@pytest.mark.parametrize("rule", LEVEL_RULES)
@pytest.mark.parametrize("dims", [2, 3])
def test_every_rule_returns_a_contiguous_tensor(rule: str, dims: int) -> None:
    x = torch.rand(2, 1, *([8] * dims)).round()
    out = LevelRule(rule).apply(x, 1)
    assert out.is_contiguous()
    out.view(-1)  # what ignite's metrics do


def test_nearest_is_contiguous_and_takes_integer_labels() -> None:
    x = torch.rand(2, 1, 16, 16)
    assert not x[..., ::2, ::2].is_contiguous()  # the strided view it used to return
    assert restrict(x, 1, "nearest").is_contiguous()
    label = torch.randint(0, 3, (2, 1, 16, 16))
    assert torch.equal(restrict(label, 1, "nearest"), label[..., ::2, ::2])
    with pytest.raises(ValueError, match=r"restrict\('area'\) needs a floating-point tensor.*restrict_mode"):
        restrict(label, 1, "area")


def test_area_rule_is_restrict_unchanged_and_keep_is_identity() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(LevelRule("area").apply(x, 2), restrict(x, 2, "area"))
    assert torch.equal(LevelRule("antialias").apply(x, 1), restrict(x, 1, "antialias"))
    labels = torch.tensor([0, 1])
    assert LevelRule("keep").apply(labels, 3) is labels
    assert LevelRule("keep").apply(x, 2) is x


def test_unbatched_rule_equals_the_batched_one() -> None:
    x = torch.randint(0, 3, (1, 8, 8, 8))
    assert torch.equal(LevelRule("mode", batched=False).apply(x, 1), restrict_mode(x[None], 1)[0])


def test_inferred_rules() -> None:
    image = torch.rand(4, 1, 16, 16)
    spatial = image.shape[2:]
    assert infer_level_rule(image, spatial) == "area"
    assert infer_level_rule(image, spatial, intensity="antialias") == "antialias"
    assert infer_level_rule(torch.randint(0, 3, (4, 1, 16, 16)), spatial) == "mode"
    assert infer_level_rule(image > 0.5, spatial) == "mode"
    assert infer_level_rule((image > 0.5).float(), spatial) == "mode"  # labels as LoadImaged reads them
    assert infer_level_rule(torch.randint(0, 3, (4, 1, 16, 16)).float(), spatial) == "area"  # 3 classes: unknown
    assert infer_level_rule(torch.randint(0, 3, (4, 1, 16, 16)).float(), spatial, categorical=True) == "mode"
    assert infer_level_rule(torch.tensor([0, 1, 1, 0]), spatial) == "keep"  # class labels (B,)
    assert infer_level_rule(torch.tensor([[0], [1], [1], [0]]), spatial) == "keep"  # (B, 1)
    assert infer_level_rule(torch.rand(4, 1, 8, 8), spatial) == "keep"  # another grid
    assert infer_level_rule(torch.rand(4, 1, 16, 16, 16), spatial) == "keep"  # another rank
    assert infer_level_rule(torch.tensor(3.0), spatial) == "keep" and infer_level_rule("meta", spatial) == "keep"
    assert infer_level_rule(torch.rand(1, 16, 16), batched=False) == "area"
    assert infer_level_rule(torch.tensor([2]), batched=False) == "keep"


def test_explicit_rules_that_cannot_apply_name_the_fix() -> None:
    spatial = (16, 16)
    with pytest.raises(ValueError, match=r"the label has shape \(4,\).*no spatial axes.*use 'keep'"):
        resolve_level_rule("mode", torch.tensor([0, 1, 1, 0]), spatial, what="the label")
    with pytest.raises(ValueError, match=r"holds torch.int64 values: 'area' averages them.*use 'mode'"):
        resolve_level_rule("area", torch.randint(0, 3, (4, 1, 16, 16)), spatial)
    with pytest.raises(ValueError, match=r"unknown rule 'majority'; use one of 'auto', 'area'"):
        resolve_level_rule("majority", torch.rand(4, 1, 16, 16), spatial)
    assert resolve_level_rule("keep", torch.rand(4, 1, 16, 16), spatial).rule == "keep"
    assert resolve_level_rule("nearest", torch.randint(0, 3, (4, 1, 16, 16)), spatial).rule == "nearest"
