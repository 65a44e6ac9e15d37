"""Batch augmentation for image classification on the device: AutoAugment, RandAugment, random
erasing, mixup/CutMix with soft targets. Plugs in after the loader's uint8 batch, before Normalize,
in training only:

    augment = BatchAugment("randaugment", magnitude=9, mixup=0.2, num_classes=1000, label_smoothing=0.1)
    images, targets = augment(images_uint8, labels)
    loss = soft_target_cross_entropy(model(normalize(images)), targets)   # when augment.soft_targets

Imports torch and `phiscale.errors` only.
"""

from phiscale.augment.batch import POLICIES, BatchAugment
from phiscale.augment.mix import smooth_one_hot, soft_target_cross_entropy

__all__ = ["POLICIES", "BatchAugment", "smooth_one_hot", "soft_target_cross_entropy"]
