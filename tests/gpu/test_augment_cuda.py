"""BatchAugment on a CUDA device (pytest mark `gpu`; run on a lent GPU, not in CI): the same plan
gives the CPU's pixels, and a call never waits for the device (no host synchronisation)."""

from __future__ import annotations

import pytest
import torch

from phiscale.augment import BatchAugment
from phiscale.augment.policies import OP_NAMES, OPS, Layer, apply_layer

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def batch(n: int = 64, side: int = 96):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)
    return images.contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (n,), generator=g)


def test_point_and_colour_ops_give_the_cpus_pixels():
    """Integer and separately-rounded float32 arithmetic: bit-identical on both devices."""
    images, _ = batch()
    names = [name for name in OP_NAMES if OPS[name].pixel is not None]
    n = len(images)
    op = torch.tensor([OP_NAMES.index(names[i % len(names)]) for i in range(n)])
    layer = Layer(op, torch.linspace(0.0, 10.0, n, dtype=torch.float64), torch.ones(n, dtype=torch.float64))
    on_cpu = apply_layer(images.clone(), layer)
    on_gpu = apply_layer(images.cuda(), layer)
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.uint8
    assert torch.equal(on_gpu.cpu(), on_cpu)


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment"])
def test_policies_with_mixing_match_the_cpu(policy):
    """Plans are drawn on the CPU, so the same seed gives the same ops, boxes and weights on either
    device; the warp's float32 grid may pick a neighbouring pixel for a few positions."""
    images, labels = batch()
    settings = {"mixup": 0.2, "cutmix": 1.0, "magnitude_std": 0.5, "label_smoothing": 0.1, "seed": 4}
    cpu = BatchAugment(policy, num_classes=10, **settings)
    gpu = BatchAugment(policy, num_classes=10, **settings)
    for _ in range(3):
        a, ta = cpu(images, labels)
        b, tb = gpu(images.cuda(), labels.cuda())
        assert b.dtype == torch.uint8 and tb.device.type == "cuda"
        assert torch.allclose(tb.cpu(), ta)
        assert (b.cpu() != a).any(dim=1).float().mean().item() < 0.005


def test_a_call_never_synchronises_with_the_device():
    images, labels = batch(128, 224)
    images, labels = images.cuda(), labels.cuda()
    augment = BatchAugment("randaugment", num_classes=10, mixup=0.2, cutmix=1.0, erasing=0.25, seed=1)
    autoaugment = BatchAugment("autoaugment", num_classes=10, seed=1)
    augment(images, labels)  # first call: creates the device generator
    autoaugment(images, labels)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            augment(images, labels)
            autoaugment(images, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_same_seed_reproduces_on_the_device_erasing_included():
    images, labels = batch()
    images, labels = images.cuda(), labels.cuda()
    runs = [BatchAugment("randaugment", num_classes=10, erasing=1.0, mixup=0.2, seed=9) for _ in range(2)]
    for _ in range(2):
        (a, ta), (b, tb) = (run(images, labels) for run in runs)
        assert torch.equal(a, b) and torch.equal(ta, tb)
