"""affectrt.ops: the fused ops, each built on one template (DESIGN §3).

Every op ``<op>`` (``attn_pool``, ``cross_attn``, ``fusion_head``) has the same four layers:

1. kernels: ``affectrt.kernels.<op>`` (Triton: ``@triton.jit`` kernels and their launchers, which choose
   block sizes through a resource model and launch through ``affectrt.kernels._launch``) and ``csrc/<op>*``
   (C++ for the CPU, CUDA), reached through the torch.library ops ``affectrt::<op>_native`` (the C++ or CUDA
   extension, by the tensors' device) and ``affectrt::<op>_triton`` (plus ``_triton_bwd``);
2. an ``autograd.Function`` ``_<Op>Triton`` whose forward and backward call those Triton ops;
3. the functional ``<op>(..., backend="auto")``: checks its inputs and asks
   :func:`affectrt.ops._backends.select` which backend runs them;
4. an ``nn.Module`` (``AttnPool``, ``CrossAttention``, ``FusedFusionHead``).

One backend vocabulary for all: ``cuda``, ``triton``, ``cpu``, ``eager`` (``auto`` picks); one rule for Triton
on CPU (the interpreter under ``TRITON_INTERPRET=1``, by name only); one place for availability checks
(:mod:`affectrt.ops._backends`). Importing an op module imports neither Triton nor the native extensions.
"""
