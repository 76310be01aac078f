"""Restoration pretraining: IPT multi-task pretraining and DCPT degradation classification."""
