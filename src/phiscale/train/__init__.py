"""Training: the run plan, the LightningModule, data module, callbacks, optimisers, LR schedules and EMA.

May import `models`, `data`, `augment`, `tracking` (a run's logger), `slurm` (the task's facts),
`config`, `errors` and `paths`; never `report`, `server` or `cli` (nor the sweeps' launching:
a sweep's run is an ordinary run handed its overrides). From `sweeps` only the pure pruning rule
and the record's tag names (`early_stop.py`, a stage's early stopping).
"""
