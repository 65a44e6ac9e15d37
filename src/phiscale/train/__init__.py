"""Training: the LightningModule, data module, callbacks, optimisers, LR schedules and EMA."""
