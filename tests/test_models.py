"""Architectures: shapes for every supported input, named blocks, and the two wrappers' promises."""

import copy

import pytest
import torch

from fastforget.models import IdentityAdapters, LogitMask, apply_wrappers, base_model, build_model, wrapper_specs


@pytest.mark.parametrize("arch,width", [("resnet18", 8), ("vgg19_bn", 8), ("cnn", 8)])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (3, 64), (1, 8)])
def test_forward_shapes(arch, width, channels, size):
    if arch != "cnn" and size == 8:
        pytest.skip("8x8 digits are for the small CNN")
    model = build_model(arch, num_classes=7, in_channels=channels, width=width).eval()
    x = torch.randn(3, channels, size, size).to(memory_format=torch.channels_last)
    assert model(x).shape == (3, 7)
    assert hasattr(model, model.middle_block) and hasattr(model, model.classifier)
    assert model.middle_block in model.block_channels


def test_resnet_named_blocks():
    model = build_model("resnet18", 10, 3, width=4)
    assert [name for name, _ in model.named_children()][:6] == ["conv1", "layer1", "layer2", "layer3", "layer4", "pool"]
    assert model.middle_block == "layer3" and model.classifier == "fc"


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown architecture 'resnet50'"):
        build_model("resnet50", 10)


def test_identity_adapters_start_equal_to_the_original_and_survive_deepcopy():
    base = build_model("resnet18", 10, 3, width=4).eval()
    with torch.no_grad():  # non-trivial BN statistics so that the identity is really tested
        for m in base.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    x = torch.randn(4, 3, 32, 32)
    expected = base(x)
    wrapped = IdentityAdapters(copy.deepcopy(base), "layer3", 16, 10).eval()
    torch.testing.assert_close(wrapped(x), expected, rtol=1e-5, atol=1e-5)
    clone = copy.deepcopy(wrapped)
    with torch.no_grad():
        clone.mid_adapter.weight.mul_(0.5)  # the clone's hook must use the clone's adapter, not the original's
    torch.testing.assert_close(wrapped(x), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(clone(x), expected)
    assert wrapper_specs(wrapped) == [{"type": "identity_adapters", "block": "layer3", "channels": 16,
                                       "num_classes": 10}]
    assert base_model(wrapped) is wrapped.base


def test_logit_mask_gives_the_proportional_target_exactly():
    base = build_model("cnn", 5, 1, width=4).eval()
    x = torch.randn(6, 1, 8, 8)
    masked = LogitMask(base, [1, 3], 5)
    probs = masked(x).softmax(1)
    p = base(x).double().softmax(1)
    expected = p.clone()
    expected[:, [1, 3]] = 0
    expected /= expected.sum(1, keepdim=True)
    torch.testing.assert_close(probs.double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.all(probs[:, [1, 3]] == 0)
    rebuilt = apply_wrappers(build_model("cnn", 5, 1, width=4), wrapper_specs(masked), 5)
    assert isinstance(rebuilt, LogitMask) and rebuilt.forget_mask.tolist() == [False, True, False, True, False]
