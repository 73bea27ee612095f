"""Models: the self-trained zoo (``zoo``, on the standard-library ``corpus``) and hub models,
loaded the same way by ``load``."""
from tokenworks.models.loader import CONTEXT, TOKENIZERS, ZOO, ZOO_DIR, load, load_weights, resolve_device, zoo_config

__all__ = ["load", "resolve_device", "load_weights", "zoo_config", "ZOO", "ZOO_DIR", "TOKENIZERS", "CONTEXT"]
