"""DMPQ (EdMIPS): softmax(alpha) mixtures of the evaluator's quantizers trained in torch."""
