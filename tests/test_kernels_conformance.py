"""Every kernel of tokenworks.kernels.KERNELS equals its PyTorch reference over its shapes and
dtypes: on the CPU under TRITON_INTERPRET=1, and on CUDA under the ``gpu`` marker (run there
with TRITON_INTERPRET=0: ``pytest -m gpu tests/test_kernels_conformance.py``). The reference
runs in float32 on the same values (float inputs upcast)."""
import ast
import os
from pathlib import Path

import pytest
import torch

from tokenworks.kernels import KERNELS

KERNEL_DIR = Path(__file__).resolve().parents[1] / "kernels"
CASES = [pytest.param(name, shape, dtype, id=f"{name}-{'x'.join(map(str, shape))}-{str(dtype)[6:]}")
         for name, spec in KERNELS.items() for shape in spec.shapes for dtype in spec.dtypes]


def check(name, shape, dtype, device):
    spec = KERNELS[name]
    kernel, reference = spec.functions()
    gen = torch.Generator().manual_seed(sum(x or 0 for x in shape))
    k_args, r_args = spec.inputs(shape, dtype, gen)
    move = lambda args, up: [a.to(device, torch.float32 if up and a.is_floating_point() else a.dtype)  # noqa: E731
                             if isinstance(a, torch.Tensor) else a for a in args]
    out = kernel(*move(k_args, False))
    ref = reference(*move(r_args, True))
    assert out.device.type == torch.device(device).type and out.shape == ref.shape
    if dtype.is_floating_point:
        assert out.dtype in (dtype, torch.float32)
    atol, rtol = spec.tol[dtype]
    torch.testing.assert_close(out.to(ref.dtype), ref, atol=atol, rtol=rtol)


@pytest.mark.parametrize("name, shape, dtype", CASES)
def test_kernel_equals_reference_on_cpu(name, shape, dtype):
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1")
    check(name, shape, dtype, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                    reason="the interpreter would run on CUDA tensors, not the compiled kernel: TRITON_INTERPRET=0")
@pytest.mark.parametrize("name, shape, dtype", CASES)
def test_kernel_equals_reference_on_cuda(name, shape, dtype):
    check(name, shape, dtype, "cuda")


def _public_functions(path):
    tree = ast.parse(path.read_text())
    return {f.name for f in tree.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")}


def test_every_kernel_is_registered():
    """Each module of kernels/ has a spec, and each function ``f`` with an ``f_reference``
    beside it is registered with that reference."""
    registered = {spec.kernel: spec.reference for spec in KERNELS.values()}
    modules = {path.split(":")[0].rsplit(".", 1)[1] for path in registered}
    files = {p.stem for p in KERNEL_DIR.glob("*.py")} - {"__init__"}
    assert modules == files
    for stem in files:
        names = _public_functions(KERNEL_DIR / f"{stem}.py")
        for f in names:
            if f"{f}_reference" in names:
                key = f"tokenworks.kernels.{stem}:{f}"
                assert registered.get(key) == f"tokenworks.kernels.{stem}:{f}_reference", key


def test_float_kernels_cover_float32_and_float16():
    for name, spec in KERNELS.items():
        assert spec.shapes and spec.dtypes, name
        if any(d.is_floating_point for d in spec.dtypes):
            assert {torch.float32, torch.float16} <= set(spec.dtypes), name
