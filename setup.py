"""Build and install prismlab together with its C++/CUDA extension ``prismlab._C``.

Install (torch must already be installed, hence no build isolation)::

    pip install --no-build-isolation -e .

Build switches (environment variables, read in ``get_extensions()``):

* ``PRISMLAB_NO_CUDA=1``        build the CPU kernels only, even when nvcc is available.
* ``CUDA_HOME``                 CUDA toolkit root (with ``bin/nvcc`` and ``lib64/libcudart.so``);
                                found from nvcc / ``/usr/local/cuda*`` when unset.
* ``TORCH_CUDA_ARCH_LIST``      GPU architectures to compile for; defaults to ``8.0;9.0+PTX``
                                (A100, H100/H200, PTX for newer GPUs) so no GPU is needed to build.
* ``PRISMLAB_DEBUG=1``          ``-O0 -g`` (and ``-G`` for device code) instead of ``-O3``.
* ``PRISMLAB_PTXAS_VERBOSE=1``  pass ``-Xptxas -v`` to nvcc (register / spill report).
* ``MAX_JOBS``                  parallel compile jobs (read by torch's BuildExtension).

The CUDA kernels are built whenever nvcc is found, never gated on
``torch.cuda.is_available()``: build nodes often have no GPU.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
import warnings

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("prismlab", "kernels", "csrc")
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"
# torch 2.14 headers need C++20 (c10/util/intrusive_ptr.h uses std::strong_ordering);
# with -std=c++17 every translation unit fails to compile.
CXX_STD = "-std=c++20"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def _is_toolkit_root(path: str) -> bool:
    has_nvcc = os.path.isfile(os.path.join(path, "bin", "nvcc"))
    has_cudart = any(os.path.exists(os.path.join(path, lib, "libcudart.so")) for lib in ("lib64", "lib"))
    return has_nvcc and has_cudart


def _roots_from_nvcc(nvcc: str) -> list[str]:
    """Toolkit roots suggested by an nvcc found on PATH.

    nvcc may be a symlink (resolved with realpath) or a small wrapper script that execs the
    real compiler (``exec /usr/local/cuda-13.0/bin/nvcc "$@"``); for the latter, absolute
    ``.../bin/nvcc`` paths are read out of the script.
    """
    roots = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))]
    try:
        if os.path.getsize(nvcc) < 64 * 1024:
            with open(nvcc, "rb") as f:
                head = f.read()
            if head.startswith(b"#!"):
                text = head.decode("utf-8", errors="replace")
                for match in re.findall(r"(/[^\s'\"$;]+)/bin/nvcc\b", text):
                    roots.append(os.path.realpath(match))
    except OSError:
        pass
    return roots


def find_cuda_home() -> str | None:
    """CUDA toolkit root to build against, or None when no toolkit is found.

    An explicit ``CUDA_HOME`` (or ``CUDA_PATH``) wins; otherwise the nvcc on PATH is followed
    (through symlinks and wrapper scripts), then ``/usr/local/cuda`` and ``/usr/local/cuda-*``.
    """
    explicit = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if explicit:
        if not _is_toolkit_root(explicit):
            warnings.warn(
                f"CUDA_HOME={explicit!r} does not contain bin/nvcc and lib64/libcudart.so; "
                "using it anyway because it was set explicitly",
                stacklevel=2,
            )
        return explicit
    candidates: list[str] = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates += _roots_from_nvcc(nvcc)
    candidates.append("/usr/local/cuda")
    candidates += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in candidates:
        if _is_toolkit_root(root):
            return os.path.realpath(root)
    return None


def get_extensions():
    no_cuda = _env_flag("PRISMLAB_NO_CUDA")
    debug = _env_flag("PRISMLAB_DEBUG")
    ptxas_verbose = _env_flag("PRISMLAB_PTXAS_VERBOSE")

    cuda_home = None if no_cuda else find_cuda_home()
    if cuda_home is not None:
        # torch.utils.cpp_extension reads CUDA_HOME when it is imported: set it first.
        os.environ["CUDA_HOME"] = cuda_home
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            # Without a visible GPU torch cannot pick the architectures itself.
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST

    import torch
    from torch.utils import cpp_extension

    use_cuda = cuda_home is not None
    cpu_only_reason = "PRISMLAB_NO_CUDA set" if no_cuda else "no CUDA toolkit found"
    if use_cuda and torch.version.cuda is None:
        warnings.warn(
            f"nvcc found under {cuda_home} but the installed torch {torch.__version__} is a "
            "CPU-only build; building prismlab._C without CUDA kernels",
            stacklevel=2,
        )
        use_cuda = False
        cpu_only_reason = "torch is a CPU-only build"

    opt = ["-O0", "-g"] if debug else ["-O3"]
    # at::parallel_for is an OpenMP region compiled into the caller: without -fopenmp it runs on
    # one thread. Linking libgomp by soname reuses the copy torch has already loaded.
    cxx_flags = opt + [CXX_STD, "-fopenmp"]
    sources = sorted(glob.glob(os.path.join(CSRC, "*.cpp")))
    extra_compile_args = {"cxx": cxx_flags}
    if use_cuda:
        sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
        nvcc_flags = (["-O0", "-g", "-G"] if debug else ["-O3"]) + [CXX_STD]
        if ptxas_verbose:
            nvcc_flags += ["-Xptxas", "-v"]
        extra_compile_args["nvcc"] = nvcc_flags
        extension_cls = cpp_extension.CUDAExtension
    else:
        extension_cls = cpp_extension.CppExtension

    if use_cuda:
        arch = os.environ["TORCH_CUDA_ARCH_LIST"]
        what = f"CPU + CUDA kernels (CUDA_HOME={cuda_home}, TORCH_CUDA_ARCH_LIST={arch})"
    else:
        what = f"CPU kernels only ({cpu_only_reason})"
    print(f"prismlab: building prismlab._C with {what}", file=sys.stderr)
    return [
        extension_cls(
            name="prismlab._C",
            sources=sources,
            include_dirs=[os.path.join(ROOT, CSRC)],
            extra_compile_args=extra_compile_args,
            extra_link_args=["-fopenmp"],
        )
    ]


def build_ext_command():
    # Imported after get_extensions(): cpp_extension reads CUDA_HOME when first imported.
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


setup(
    name="prismlab",
    version="0.1.0",
    description="Distributed training of vision models on SLURM clusters",
    packages=find_packages(include=["prismlab", "prismlab.*"]),
    python_requires=">=3.10",
    install_requires=[],
    ext_modules=get_extensions(),
    cmdclass={"build_ext": build_ext_command()},
    entry_points={"console_scripts": ["prismlab = prismlab.cli:main"]},
    zip_safe=False,
)
