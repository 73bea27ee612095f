"""Models: the self-trained zoo (``zoo``, on the standard-library ``corpus``) and hub models,
loaded the same way by ``load``."""
from tokenworks.models.packaged import PACKAGED, cache_dir
from tokenworks.models.loader import CONTEXT, TOKENIZERS, ZOO, load, load_weights, resolve_device, sliding_attention, zoo_config, zoo_dir


def __getattr__(name):  # ZOO_DIR is found on first use: importing the package needs no checkout
    if name == "ZOO_DIR":
        return zoo_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["load", "sliding_attention", "PACKAGED", "cache_dir", "resolve_device", "load_weights", "zoo_config", "ZOO", "ZOO_DIR", "zoo_dir", "TOKENIZERS", "CONTEXT"]
