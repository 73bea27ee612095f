"""Exact byte-level probabilities from token-level LMs (Phan et al., ICLR 2025).

>>> lm = ByteLM(model, tokenizer)
>>> lm.next_byte_logprobs(b"def fo")      # [257]: bytes 0-255, then end of text

Methods: ``bytelm`` (``ByteLM``, token healing as a baseline), ``ensemble``. Experiments:
``tasks`` (fill-in-the-middle items, scoring, the genlm-bytes comparison), ``plots``.
"""
from tokenworks.bytelevel.bytelm import END, ByteLM, byte_decoder, decode_bytes
from tokenworks.bytelevel.ensemble import ByteEnsemble

__all__ = ["ByteLM", "ByteEnsemble", "END", "byte_decoder", "decode_bytes"]
