"""BatchAugment, the entry point: identity when off, uint8 out in either layout, targets' type,
seeding and resumable RNG state, the global RNG left alone, and one-line errors naming the key."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from phiscale.augment import POLICIES, BatchAugment
from phiscale.errors import PhiscaleError

C = 10
EVERYTHING = {"mixup": 0.4, "cutmix": 1.0, "erasing": 0.5, "magnitude_std": 0.5, "label_smoothing": 0.1}


def labels_for(images: torch.Tensor) -> torch.Tensor:
    return torch.arange(len(images)) % C


def test_policy_none_without_mixing_is_the_identity(batch):
    labels = labels_for(batch)
    out, targets = BatchAugment("none", num_classes=C)(batch, labels)
    assert torch.equal(out, batch) and targets is labels


def test_randaugment_with_no_ops_is_the_identity(batch):
    out, _ = BatchAugment("randaugment", num_ops=0, num_classes=C)(batch, labels_for(batch))
    assert torch.equal(out, batch)


@pytest.mark.parametrize("policy", POLICIES)
def test_outputs_are_uint8_and_layout_does_not_change_values(policy, batch):
    labels = labels_for(batch)
    batch = batch.repeat(4, 1, 1, 1)
    labels = labels.repeat(4)
    last = batch.contiguous(memory_format=torch.channels_last)
    a_images, a_targets = BatchAugment(policy, num_classes=C, seed=1, **EVERYTHING)(batch, labels)
    b_images, b_targets = BatchAugment(policy, num_classes=C, seed=1, **EVERYTHING)(last, labels)
    assert a_images.dtype == b_images.dtype == torch.uint8
    assert a_images.shape == batch.shape
    assert torch.equal(a_images, b_images) and torch.equal(a_targets, b_targets)
    assert a_targets.dtype == torch.float32 and a_targets.shape == (len(batch), C)
    assert torch.allclose(a_targets.sum(1), torch.ones(len(batch)))
    if policy != "none":
        assert not torch.equal(a_images, batch)


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment"])
def test_policies_without_mixing_keep_int_labels(policy, batch):
    labels = labels_for(batch)
    out, targets = BatchAugment(policy, num_classes=C)(batch, labels)
    assert targets is labels and targets.dtype == torch.int64
    assert out.dtype == torch.uint8


def test_same_seed_same_output_other_seed_or_rank_differs(batch):
    batch = batch.repeat(4, 1, 1, 1)
    labels = labels_for(batch)

    def run(**kwargs):
        augment = BatchAugment("randaugment", num_classes=C, **EVERYTHING, **kwargs)
        return [augment(batch, labels) for _ in range(3)]

    first, again = run(seed=7), run(seed=7)
    for (a, ta), (b, tb) in zip(first, again, strict=True):
        assert torch.equal(a, b) and torch.equal(ta, tb)
    for other in (run(seed=8), run(seed=7, rank=1)):
        assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(first, other, strict=True))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(run(seed=8), run(seed=7, rank=1), strict=True))


def test_state_dict_continues_the_stream_after_a_checkpoint(batch):
    batch = batch.repeat(4, 1, 1, 1)
    labels = labels_for(batch)
    augment = BatchAugment("autoaugment", num_classes=C, seed=3, **EVERYTHING)
    augment(batch, labels)
    saved = io.BytesIO()
    torch.save(augment.state_dict(), saved)  # as a Lightning checkpoint would
    expected = [augment(batch, labels) for _ in range(3)]
    saved.seek(0)
    resumed = BatchAugment("autoaugment", num_classes=C, seed=3, **EVERYTHING)
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    for (a, ta), (b, tb) in zip(expected, [resumed(batch, labels) for _ in range(3)], strict=True):
        assert torch.equal(a, b) and torch.equal(ta, tb)
    fresh = BatchAugment("autoaugment", num_classes=C, seed=3, **EVERYTHING)
    assert not torch.equal(fresh(batch, labels)[0], expected[0][0])


def test_global_rngs_are_untouched(batch):
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(5)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    augment = BatchAugment("randaugment", num_classes=C, **EVERYTHING)
    out, _ = augment(batch, labels_for(batch))
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1] and np.array_equal(np.random.get_state()[1], before[2])
    torch.manual_seed(999)  # the global seed does not steer it either
    again, _ = BatchAugment("randaugment", num_classes=C, **EVERYTHING)(batch, labels_for(batch))
    assert torch.equal(out, again)


def test_the_input_batch_is_not_modified(batch):
    copy = batch.clone()
    BatchAugment("autoaugment", num_classes=C, **EVERYTHING)(batch, labels_for(batch))
    assert torch.equal(batch, copy)


def test_params_are_the_aug_settings_as_strings():
    params = BatchAugment("randaugment", magnitude=7.5, mixup=0.2, num_classes=C).params()
    assert all(key.startswith("aug.") and isinstance(value, str) for key, value in params.items())
    assert params["aug.policy"] == "randaugment" and params["aug.magnitude"] == "7.5"
    assert params["aug.mixup"] == "0.2" and params["aug.num_ops"] == "2"


@pytest.mark.parametrize("kwargs, key", [
    ({"policy": "autoaugment_v2"}, "aug.policy"),
    ({"policy": "randaugment", "num_ops": -1}, "aug.num_ops"),
    ({"num_ops": 1.5}, "aug.num_ops"),
    ({"magnitude": 11}, "aug.magnitude"),
    ({"magnitude": -0.5}, "aug.magnitude"),
    ({"magnitude": "9"}, "aug.magnitude"),
    ({"magnitude_std": -1}, "aug.magnitude_std"),
    ({"mixup": -0.2}, "aug.mixup"),
    ({"cutmix": float("nan")}, "aug.cutmix"),
    ({"mix_prob": 1.5}, "aug.mix_prob"),
    ({"switch_prob": -0.1}, "aug.switch_prob"),
    ({"erasing": 2}, "aug.erasing"),
    ({"interpolation": "bicubic"}, "aug.interpolation"),
    ({"fill": 300}, "aug.fill"),
    ({"num_classes": 0}, "data.num_classes"),
    ({"label_smoothing": 1.0}, "optim.label_smoothing"),
    ({"seed": -1}, "seed"),
])
def test_bad_settings_raise_one_line_naming_the_key(kwargs, key):
    kwargs = {"num_classes": C, **kwargs}
    policy = kwargs.pop("policy", "none")
    with pytest.raises(PhiscaleError) as err:
        BatchAugment(policy, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{key}=") and "\n" not in message
    assert "e.g." in message or "one of" in message


def test_bad_batches_are_refused(batch):
    augment = BatchAugment("randaugment", num_classes=C)
    with pytest.raises(PhiscaleError, match="uint8 images"):
        augment(batch.float(), labels_for(batch))
    with pytest.raises(PhiscaleError, match="int64 labels"):
        augment(batch, labels_for(batch).int())
    with pytest.raises(PhiscaleError, match="data.num_classes"):
        augment(batch, labels_for(batch) + C)
