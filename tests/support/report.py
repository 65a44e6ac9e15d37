"""RunRow fixtures for the report's tests."""

from __future__ import annotations

from phiscale.report.rows import RunRow


def row(name: str, **kw) -> RunRow:
    values = dict(run_id=name, run_name=name, model="efficientnet", family="efficientnet", phi=0.0, depth_mult=1.0,
                  width_mult=1.0, resolution_mult=1.0, resolution=224, params=1e5, macs=1e6, top1=0.9,
                  images_per_s=100.0, device_hours=1.0, status="FINISHED")
    return RunRow(**(values | kw))
