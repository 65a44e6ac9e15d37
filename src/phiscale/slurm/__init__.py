"""SLURM, seen from inside a task and from outside the queue.

    env.py    the task's SLURM facts (job and array ids, restarts, layout) read once into SlurmEnv;
              the layout check against the trainer; requeue
    queue.py  sbatch, and the states of array tasks from scontrol, sacct or the jobcomp log

Imports only `phiscale.errors`: training, tracking and sweeps all read SLURM through this package.
"""
