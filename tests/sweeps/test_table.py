"""The terminal tables: columns padded to their widest cell, chosen ones left-aligned, no trailing
blanks; a missing number is a dash."""

from __future__ import annotations

from phiscale.sweeps.table import columns, num


def test_columns_align_left_where_asked_and_right_elsewhere():
    lines = columns(["#", "overrides", "top-1"], [["1", "model.phi=1", "0.9"], ["10", "-", "0.95"]], left=(1,))
    assert lines == [
        " #  overrides    top-1",
        " 1  model.phi=1    0.9",
        "10  -             0.95",
    ]
    assert all(line == line.rstrip() for line in columns(["a", "b"], [["x", ""]], left=(0, 1)))


def test_a_missing_number_is_a_dash_and_others_follow_the_spec():
    assert num(None) == "-" and num(0.5) == "0.500" and num(1234.56, "{:.1f}") == "1234.6"
