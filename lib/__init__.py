"""tokenworks: reproductions of token-level LLM inference papers.

One subpackage per family, each with its methods, a registry its conformance tests iterate
over, and its experiments (``tasks``, ``plots``) kept apart:

- ``tokenworks.kvcache``: KV-cache presses (StreamingLLM, EMS; kvpress's by name) and
  TokenSelect; registry ``PRESSES``.
- ``tokenworks.speculative``: lossless speculative decoding (prompt lookup, Token Recycling,
  Lookahead); registry ``METHODS``.
- ``tokenworks.bytelevel``: exact byte-level probabilities (``ByteLM``, ``ByteEnsemble``).
- ``tokenworks.decoding``: decoding strategies (greedy, top-p, CNTP); registry ``STRATEGIES``.
- ``tokenworks.metrics``: TensorBLEU.
- ``tokenworks.models``: ``load`` for the zoo and hub models.
- ``tokenworks.kernels``: Triton kernels, each with its PyTorch reference; registry ``KERNELS``.

Shared: ``results`` (provenance), ``paths`` (where the repository's data lives), ``ids``
(token-id checks), ``stats``, ``style``, ``bench``.
"""
