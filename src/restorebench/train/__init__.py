"""The training engine: a loop written out (loop.py), strategies, schedules, EMA and checkpoints."""
