"""The block-spec language: one row string decodes into a block config, bad rows are refused."""

from __future__ import annotations

import pytest

from phiscale.errors import PhiscaleError
from phiscale.models.specs import decode_block


def test_spec_language_decodes_rows():
    block = decode_block("ir_r2_k5_s2_e6_c40_se0.25")
    assert (block.kind, block.repeats, block.kernel, block.stride, block.expand_ratio, block.out,
            block.se_ratio) == ("ir", 2, 5, 2, 6.0, 40, 0.25)
    assert decode_block("ir_k3_s1_x184_c80_hswish").expanded == 184
    for bad in ("zz_c8", "ir_c8", "ir_q3_e6_c8", "ir_e6_x8_c8"):
        with pytest.raises(PhiscaleError):
            decode_block(bad)
