"""Sweeps: many runs of one study, followed as one thing.

    file.py      a sweep file (base, points, grid, constraint, seeds) and the runs it expands to
    study.py     a two-stage study in one file (search α, β, γ at φ=1, then scale the winner)
    pruning.py   the stages' early-stopping rule (ASHA), pure
    winner.py    the search's winner, picked once when the scale stage starts
    listing.py   a sweep file's runs as data and as the table `phiscale-sweep list` prints
    record.py    a submitted sweep: its id, <root>/sweeps/<id>/sweep.json, the parent MLflow run
    launch.py    queueing the runs as one SLURM array, or training them here one after another
    status.py    each run's state (MLflow and SLURM), the parent's status, the status table
    close.py     the small dependent job that closes the parent when the last run has ended
    multirun.py  the Hydra callback that records a multirun over a sweep file
    table.py     plain-text tables for the terminal

May import `phiscale.tracking` (the parent run, the child runs), `phiscale.slurm` (sbatch and task
states), `phiscale.models.scaling`, `phiscale.config`, `errors` and `paths`; never `cli`, `train`
or `report` (the report reads sweeps, not the other way round).
"""
