"""The report's table says once when its rows mix augmentation settings."""

from __future__ import annotations

from support.report import row

from phiscale.report.tables import augmentation_note


def test_a_report_mixing_augmentation_settings_says_so_once():
    same = [row("a"), row("b")]
    assert augmentation_note(same) is None
    mixed = [row("a"), row("b", aug="randaugment n2 m9"), row("c")]
    note = augmentation_note(mixed)
    assert note.startswith("Augmentation differs between these runs: none (2 rows); randaugment n2 m9 (1 row)")
    assert "\n" not in note
