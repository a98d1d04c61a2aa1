"""Test configuration: Triton kernels run through the interpreter on CPU tensors when there is no GPU.

The variable must be set before triton is imported, so it is set here, ahead of every test module.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
