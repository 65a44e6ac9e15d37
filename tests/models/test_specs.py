"""The block-spec language: one row string decodes into a block config, bad rows are refused, and
every architecture of the table is a valid network of total stride 32."""

from __future__ import annotations

import pytest

from phiscale.errors import PhiscaleError
from phiscale.models.specs import ARCHITECTURES, EFFICIENTNET_PRESETS, decode_block, decode_rows


def test_spec_language_decodes_rows():
    block = decode_block("ir_r2_k5_s2_e6_c40_se0.25")
    assert (block.kind, block.repeats, block.kernel, block.stride, block.expand_ratio, block.out,
            block.se_ratio) == ("ir", 2, 5, 2, 6.0, 40, 0.25)
    assert decode_block("ir_k3_s1_x184_c80_hswish").expanded == 184
    for bad in ("zz_c8", "ir_c8", "ir_q3_e6_c8", "ir_e6_x8_c8"):
        with pytest.raises(PhiscaleError):
            decode_block(bad)


def test_rows_carry_activation_and_noshrink_tokens():
    head, block = decode_rows("cn_k1_c1280_noshrink ir_k5_s2_x96_c40_se0.25_hswish")
    assert (head.kind, head.kernel, head.out, head.noshrink) == ("cn", 1, 1280, True)
    assert (block.act, block.expanded, block.se_ratio, block.stride) == ("hswish", 96, 0.25, 2)
    with pytest.raises(PhiscaleError, match="cannot read token 'gelu'"):
        decode_block("ir_e6_c8_gelu")


def test_every_architecture_has_a_total_stride_of_32():
    assert {name: spec.total_stride for name, spec in ARCHITECTURES.items()} == dict.fromkeys(ARCHITECTURES, 32)
    assert set(EFFICIENTNET_PRESETS) < set(ARCHITECTURES) and "efficientnet" in ARCHITECTURES
