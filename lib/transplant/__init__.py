"""Tokenizer transplantation without training (Goddard and Fernandes Neto, arXiv 2506.06607).

>>> model, report = transplant(base, base_tokenizer, donor, donor_tokenizer, method="omp", k=64)
>>> model(donor_tokenizer("text", return_tensors="pt").input_ids)   # the base model, in the donor's tokens

Methods: ``vocab`` (normalised vocabularies, shared tokens), ``omp`` (batched orthogonal
matching pursuit), ``omp_transplant`` (``METHODS``: omp and the zero, mean and subword baselines).
"""
from tokenworks.transplant.omp import batch_omp
from tokenworks.transplant.omp_transplant import METHODS, transplant, transplant_rows
from tokenworks.transplant.vocab import shared_tokens, vocab_keys

__all__ = ["METHODS", "batch_omp", "shared_tokens", "transplant", "transplant_rows", "vocab_keys"]
