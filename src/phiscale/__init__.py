"""phiscale: compound-scaled MobileNet / EfficientNet training with FFCV, Lightning, MLflow and SLURM."""

import os

from phiscale.train.torchmetrics_extras import skip_torchmetrics_extras

__version__ = "0.1.0"

# No calls home: MLflow 3.17 sends usage telemetry unless told not to (mlflow/telemetry/utils.py
# reads MLFLOW_DISABLE_TELEMETRY and DO_NOT_TRACK when `import mlflow` runs). Compute nodes have no
# route out, and its client races in forked writers (KeyError '_MLFLOW_TELEMETRY_SESSION_ID' on
# log-batch, seen with 48). Every phiscale process imports this first, and `mlflow server` inherits
# it; a user's own MLFLOW_DISABLE_TELEMETRY=false wins.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Lightning's torchmetrics without scipy.signal and matplotlib, which no phiscale process uses: over a
# quarter of importing Lightning (phiscale/train/torchmetrics_extras.py).
skip_torchmetrics_extras()
