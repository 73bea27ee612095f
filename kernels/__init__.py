"""Triton kernels (``tokenworks.kernels``), each tested against a PyTorch reference."""
import os


def check_device(x) -> None:
    """Refuse a CPU tensor unless Triton runs in interpreter mode."""
    if x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("Triton kernels run on a GPU, or on the CPU with TRITON_INTERPRET=1 "
                           "set before triton is first imported")
