"""Restoration pretraining (issue 7): IPT multi-task pretraining and DCPT degradation classification."""
