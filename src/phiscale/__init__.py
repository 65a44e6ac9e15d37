"""phiscale: compound-scaled MobileNet / EfficientNet training with FFCV, Lightning, MLflow and SLURM."""

__version__ = "0.1.0"
