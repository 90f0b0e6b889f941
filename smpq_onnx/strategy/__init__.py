"""The strategy room: search space, the quantization game, Shapley estimators, selection, SMPQ and
the baselines (uniform, random, context, AMP, DMPQ)."""
