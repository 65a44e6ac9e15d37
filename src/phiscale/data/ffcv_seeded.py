"""FFCV's train decode (random-resized crop + horizontal flip) with randomness that is a function of
the run's seed and the sample alone, so the same seed gives the same batches.

FFCV 1.0.2 draws its crops and flips from numba's `np.random`, whose state is per thread and
seeded from the OS, and its parallel loop hands samples to threads in no fixed order: two runs
with the same seed see different augmentations. Here each sample reseeds its thread's generator
from (seed, sample index, its batch's fingerprint) before drawing; the fingerprint (a function of
the batch's sample indices, which FFCV's seeded order fixes per epoch) makes the draws differ
from epoch to epoch. Importing this module imports ffcv.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, RandomResizedCropRGBImageDecoder
from ffcv.pipeline.compiler import Compiler

from phiscale.data.libffcv_cached import imdecode, resize_crop

UINT32 = 2**32


def batch_fingerprint(batch_indices) -> int:
    """A number that differs between batches of different samples (and orders)."""
    stamp = 0
    for k in range(len(batch_indices)):
        stamp = (stamp * 1_000_003 + int(batch_indices[k]) + 1) % 2_147_483_647
    return stamp


def sample_seed(seed: int, source_ix: int, stamp: int) -> int:
    """The generator seed of one sample's draws (a 32-bit mix of its three inputs)."""
    return (seed * 2_654_435_761 + source_ix * 40_503 + stamp * 69_069 + 1) % UINT32


def mirror_in_place(image) -> None:
    """Flip an HWC image left-right in place (the C resize needs contiguous buffers, not views)."""
    width = image.shape[1]
    for row in range(image.shape[0]):
        for col in range(width // 2):
            for channel in range(image.shape[2]):
                left = image[row, col, channel]
                image[row, col, channel] = image[row, width - 1 - col, channel]
                image[row, width - 1 - col, channel] = left


class SeededRandomResizedCropFlip(RandomResizedCropRGBImageDecoder):
    """Decode, random-resized crop (Szegedy et al. 2015) to `output_size`, and flip with probability
    `flip_prob`, every draw seeded from (seed, sample, batch)."""

    def __init__(self, output_size, *, scale, ratio, seed: int, flip_prob: float = 0.5) -> None:
        super().__init__(output_size, scale=scale, ratio=ratio)
        self.seed = int(seed) % UINT32
        self.flip_prob = float(flip_prob)

    def generate_code(self) -> Callable:
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        resize_crop_c = Compiler.compile(resize_crop)
        get_crop_c = Compiler.compile(self.get_crop_generator)
        fingerprint_c = Compiler.compile(batch_fingerprint)
        sample_seed_c = Compiler.compile(sample_seed)
        mirror_c = Compiler.compile(mirror_in_place)
        scale, ratio = np.array(self.scale), np.array(self.ratio)
        seed, flip_prob = self.seed, self.flip_prob

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            stamp = fingerprint_c(batch_indices)
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                np.random.seed(sample_seed_c(seed, source_ix, stamp))
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height = np.uint32(field["height"])
                width = np.uint32(field["width"])
                if field["mode"] == jpg:
                    temp_buffer = temp_storage[dst_ix]
                    imdecode_c(image_data, temp_buffer, height, width, height, width, 0, 0, 1, 1, False, False)
                    temp_buffer = temp_buffer.reshape(-1)[: 3 * height * width].reshape(height, width, 3)
                else:
                    temp_buffer = image_data.reshape(height, width, 3)
                i, j, h, w = get_crop_c(height, width, scale, ratio)
                resize_crop_c(temp_buffer, i, i + h, j, j + w, destination[dst_ix])
                if np.random.random() < flip_prob:
                    mirror_c(destination[dst_ix])
            return destination[: len(batch_indices)]

        decode.is_parallel = True
        return decode
