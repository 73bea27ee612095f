"""Metrics on token ids."""
from tokenworks.metrics.tensorbleu import tensor_bleu

__all__ = ["tensor_bleu"]
