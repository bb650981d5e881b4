"""Custom C++/CUDA kernels of prismlab (extension ``prismlab._C``) and their references.

Build the extension with ``pip install --no-build-isolation -e .``; without it the ops fall
back to the pure-PyTorch references in :mod:`prismlab.kernels.reference` (with a warning).
"""

from prismlab.kernels.ops import (
    channel_adapter,
    channel_attention,
    cuda_kernels_compiled,
    extension_available,
)
from prismlab.kernels.reference import channel_adapter_reference, channel_attention_reference

__all__ = [
    "channel_adapter",
    "channel_adapter_reference",
    "channel_attention",
    "channel_attention_reference",
    "cuda_kernels_compiled",
    "extension_available",
]
