"""Seeding: one stream per rank derived from the run's seed, RNG states that survive a checkpoint."""

from __future__ import annotations

import random

import numpy as np
import torch

from phiscale.train.seeding import rank_seed, restore_rng_states, rng_states, seed_rank_stream


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path, tiny_classifier):
    module = tiny_classifier()
    module.best_val_top1 = 0.75
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    expected = draws()
    torch.save(checkpoint, tmp_path / "c.ckpt")
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)  # as Lightning loads checkpoints
    draws()  # the RNGs move on
    resumed = tiny_classifier()
    resumed.on_load_checkpoint(loaded)
    assert draws() == expected, "torch, numpy and Python draw the same numbers after a resume"
    assert resumed.best_val_top1 == 0.75


def test_restore_rng_states_restores_each_generator():
    states = rng_states()
    expected = draws()
    restore_rng_states(states)
    assert draws() == expected


def test_each_rank_has_its_own_stream_and_the_same_one_every_time():
    assert rank_seed(0, 0) == rank_seed(0, 0) and rank_seed(0, 0) != rank_seed(0, 1) != rank_seed(1, 1)
    seed_rank_stream(0, 1)
    first = draws()
    seed_rank_stream(0, 1)
    assert draws() == first, "a restart of rank 1 draws the same numbers"
    seed_rank_stream(0, 0)
    assert draws() != first, "rank 0 draws others"
