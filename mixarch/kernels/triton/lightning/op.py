"""The Triton backends of ``lightning_attention`` and ``lightning_step``, as torch custom ops.

The kernels run inside custom ops (``mixarch::triton_lightning_fwd`` / ``_bwd`` / ``_step``), so
``torch.compile(fullgraph=True)`` sees one node per call and no graph break: :func:`torch.library.triton_op`
on GPUs (the compiler can also see the kernels), an opaque :func:`torch.library.custom_op` with a shape-only
fake under ``TRITON_INTERPRET=1`` (the interpreter's kernels cannot be traced). The forward op's backward
(``register_autograd``) is the backward op, so gradients flow in compiled code. Eager calls launch the same
kernels directly, with autograd through :class:`_EagerAttention`: the custom ops' dispatch and ``wrap_triton``
cost ~250 us of host time per launch, which at 4K tokens was four times the kernels' GPU time
(:func:`~mixarch.kernels.triton.launcher`).

Supported: CUDA tensors (CPU tensors under the interpreter) in fp16, bf16 or fp32, head dims ``Dk, Dv <= 128``,
``T >= 1``, no gradient w.r.t. ``decay``; :func:`unsupported_attention` / :func:`unsupported_step` say why
other inputs are not (the dispatcher then runs the reference). ``chunk_size`` is accepted and ignored: the
kernels use their own chunk (64 tokens; 16 under the interpreter).
"""

import torch
import triton
from torch.library import custom_op, triton_op

from mixarch.errors import MixarchError
from mixarch.kernels.triton import eager, interpreting, on_triton_device
from mixarch.kernels.triton.lightning.chunk import CHUNK, chunk_bwd, chunk_fwd, segment_size
from mixarch.kernels.triton.lightning.recurrent import step_fwd
from mixarch.ops.lightning._common import check_chunk_size, check_inputs

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128


def _define(name: str, fake):
    """Register ``fn`` as ``mixarch::<name>``: a triton_op, or under the interpreter a custom op with ``fake``."""

    def register(fn):
        if interpreting():
            op = custom_op(f"mixarch::{name}", fn, mutates_args=())
            op.register_fake(fake)
            return op
        return triton_op(f"mixarch::{name}", fn, mutates_args=())

    return register


def _n_seqs(q: torch.Tensor, cu_seqlens: torch.Tensor | None) -> int:
    return q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1


def _fwd_fake(q, k, v, decay, initial_state, cu_seqlens, scale, chunk, segment):
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    n_slots = b * triton.cdiv(t, segment) if cu_seqlens is None else t // segment + cu_seqlens.shape[0] - 1
    return (q.new_empty(b, t, h, dv), q.new_empty(_n_seqs(q, cu_seqlens), h, dk, dv, dtype=torch.float32),
            q.new_empty(n_slots, h, dk, dv, dtype=torch.float32))


@_define("triton_lightning_fwd", _fwd_fake)
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor,
            initial_state: torch.Tensor | None, cu_seqlens: torch.Tensor | None, scale: float, chunk: int,
            segment: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(o, final state, states entering each segment): see :func:`chunk_fwd`."""
    return chunk_fwd(q, k, v, decay, initial_state, cu_seqlens, scale, chunk, segment)


def _bwd_fake(q, k, v, decay, enter, do, dht, cu_seqlens, scale, chunk, segment):
    b, t, h, dk = q.shape
    dh0 = q.new_empty(_n_seqs(q, cu_seqlens), h, dk, v.shape[-1], dtype=torch.float32)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dh0


@_define("triton_lightning_bwd", _bwd_fake)
def _bwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, enter: torch.Tensor,
            do: torch.Tensor, dht: torch.Tensor | None, cu_seqlens: torch.Tensor | None, scale: float, chunk: int,
            segment: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dh0): see :func:`chunk_bwd`."""
    return chunk_bwd(q, k, v, decay, enter, do, dht, cu_seqlens, scale, chunk, segment)


def _setup_context(ctx, inputs, output):
    q, k, v, decay, initial_state, cu_seqlens, scale, chunk, segment = inputs
    ctx.save_for_backward(q, k, v, decay, output[2], cu_seqlens)
    ctx.config = (scale, chunk, segment)
    ctx.state_dtype = None if initial_state is None else initial_state.dtype
    ctx.mark_non_differentiable(output[2])


def _grads(ctx, do, dht, backward):
    """Gradients of (q, k, v, decay, initial_state, ...) from ``backward`` (the op or the direct launches)."""
    q, k, v, decay, enter, cu_seqlens = ctx.saved_tensors
    do = q.new_zeros(*q.shape[:3], v.shape[-1]) if do is None else do
    dq, dk, dv, dh0 = backward(q, k, v, decay, enter, do.contiguous(), None if dht is None else dht.contiguous(),
                               cu_seqlens, *ctx.config)
    dh0 = None if ctx.state_dtype is None else dh0.to(ctx.state_dtype)
    return dq, dk, dv, None, dh0, None, None, None, None


def _backward(ctx, do, dht, _denter):
    return _grads(ctx, do, dht, _bwd_op)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerAttention(torch.autograd.Function):
    """``_fwd_op`` and its backward for eager calls: the same kernels, launched directly. (``forward`` takes
    ``ctx``: a separate ``setup_context`` makes every ``apply`` bind arguments through ``inspect.signature``.)"""

    @staticmethod
    def forward(ctx, q, k, v, decay, initial_state, cu_seqlens, scale, chunk, segment):
        output = chunk_fwd(q, k, v, decay, initial_state, cu_seqlens, scale, chunk, segment, direct=True)
        ctx.set_materialize_grads(False)
        _setup_context(ctx, (q, k, v, decay, initial_state, cu_seqlens, scale, chunk, segment), output)
        return output

    @staticmethod
    def backward(ctx, do, dht, _denter):
        return _grads(ctx, do, dht, lambda *args: chunk_bwd(*args, direct=True))


def _step_fake(q, k, v, decay, state, scale):
    b, _, h, dk = q.shape
    return q.new_empty(b, 1, h, v.shape[-1]), q.new_empty(b, h, dk, v.shape[-1], dtype=torch.float32)


@_define("triton_lightning_step", _step_fake)
def _step_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, state: torch.Tensor | None,
             scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, new state): see :func:`step_fwd`."""
    return step_fwd(q, k, v, decay, state, scale)


def _common_reason(q, k, v, decay) -> str | None:
    tensors = (q, k, v, decay)
    if not all(isinstance(x, torch.Tensor) for x in tensors) or q.dim() != 4 or k.shape != q.shape \
            or v.dim() != 4 or v.shape[:3] != q.shape[:3] or decay.shape != (q.shape[2],):
        return "q, k must be [B, T, H, Dk], v [B, T, H, Dv] and decay [H]"
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"q, k, v must share one of the dtypes fp16, bf16, fp32; got {q.dtype}, {k.dtype}, {v.dtype}"
    if not decay.is_floating_point():
        return f"decay must be floating point, got {decay.dtype}"
    if not on_triton_device(q) or k.device != q.device or v.device != q.device:
        return (f"q, k, v must be CUDA tensors (CPU only under TRITON_INTERPRET=1) on one device; got {q.device}, "
                f"{k.device}, {v.device}")
    if not (1 <= q.shape[3] <= MAX_HEAD_DIM and 1 <= v.shape[3] <= MAX_HEAD_DIM):
        return f"head dims Dk, Dv must be in 1..{MAX_HEAD_DIM}, got {q.shape[3]}, {v.shape[3]}"
    if torch.is_grad_enabled() and decay.requires_grad:
        return "gradients w.r.t. decay are not implemented"
    return None


def unsupported_attention(q, k, v, decay, *, scale=None, initial_state=None, output_final_state=False,
                          cu_seqlens=None, chunk_size=64) -> str | None:
    """Why the Triton backend cannot run this ``lightning_attention`` call (None: it can)."""
    reason = _common_reason(q, k, v, decay)
    if reason is not None:
        return reason
    b, t, h, dk = q.shape
    if t == 0:
        return "T == 0"
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 \
                or cu_seqlens.is_floating_point() or cu_seqlens.is_complex() or cu_seqlens.dtype == torch.bool:
            return "cu_seqlens must be a 1-D integer tensor [N + 1]"
        if b != 1:
            return f"cu_seqlens needs B == 1, got B = {b}"
    if initial_state is not None:
        shape = (_n_seqs(q, cu_seqlens), h, dk, v.shape[3])
        if not isinstance(initial_state, torch.Tensor) or not initial_state.is_floating_point() \
                or tuple(initial_state.shape) != shape:
            return f"initial_state must be a floating-point tensor of shape {list(shape)}"
    return None


def unsupported_step(q, k, v, decay, state, *, scale=None) -> str | None:
    """Why the Triton backend cannot run this ``lightning_step`` call (None: it can)."""
    reason = _common_reason(q, k, v, decay)
    if reason is not None:
        return reason
    b, t, h, dk = q.shape
    if t != 1:
        return f"lightning_step takes one token (T == 1), got T = {t}"
    if state is not None:
        shape = (b, h, dk, v.shape[3])
        if not isinstance(state, torch.Tensor) or not state.is_floating_point() or tuple(state.shape) != shape:
            return f"state must be a floating-point tensor of shape {list(shape)}"
        if state.device != q.device:
            return f"state must be on q's device {q.device}, got {state.device}"
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (q, k, v, state)):
        return "the Triton decode step is not differentiable"
    return None


def _scale(q: torch.Tensor, scale: float | None) -> float:
    return q.shape[3] ** -0.5 if scale is None else float(scale)


def _decay(decay: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return decay.detach().to(device=q.device, dtype=torch.float32).contiguous()


def lightning_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, *,
                        scale: float | None = None, initial_state: torch.Tensor | None = None,
                        output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None,
                        chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Triton ``lightning_attention`` (contract in :mod:`mixarch.ops.lightning`): q, k ``[B, T, H, Dk]``, v
    ``[B, T, H, Dv]``, decay ``[H]`` -> ``o`` ``[B, T, H, Dv]`` (q's dtype), final state ``[B or N, H, Dk, Dv]``
    (fp32) or None. Differentiable w.r.t. q, k, v and ``initial_state``.

    Eager calls validate like the reference (one host sync for ``decay`` and ``cu_seqlens`` values); compiled
    calls check shapes and dtypes only. A single token without ``cu_seqlens`` and without gradients takes the
    decode-step kernel.
    """
    check_chunk_size(chunk_size)
    if not torch.compiler.is_compiling():
        check_inputs(q, k, v, decay, scale=scale, initial_state=initial_state, cu_seqlens=cu_seqlens)
    reason = unsupported_attention(q, k, v, decay, initial_state=initial_state, cu_seqlens=cu_seqlens)
    if reason is not None:
        raise MixarchError(f"lightning_attention[triton] cannot run these inputs: {reason}")
    b, t, h, _ = q.shape
    scale = _scale(q, scale)
    needs_grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, initial_state))
    if t == 1 and cu_seqlens is None and not needs_grad:
        state = None if initial_state is None else initial_state.to(q.device).contiguous()
        o, ht = _step(q.contiguous(), k.contiguous(), v.contiguous(), _decay(decay, q), state, scale)
    else:
        args = (q.contiguous(), k.contiguous(), v.contiguous(), _decay(decay, q),
                None if initial_state is None else initial_state.to(q.device).contiguous(),
                None if cu_seqlens is None else cu_seqlens.to(q.device), scale, CHUNK, segment_size(b * t, h))
        o, ht, _ = _EagerAttention.apply(*args) if eager(*args[:6]) else _fwd_op(*args)
    return o, (ht if output_final_state else None)


def _step(q, k, v, decay, state, scale):
    """Eager calls launch the kernel directly (no custom-op dispatch cost); traced ones go through the step op."""
    if eager(q, k, v, decay, state):
        return step_fwd(q, k, v, decay, state, scale, direct=True)
    return _step_op(q, k, v, decay, state, scale)


def lightning_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor,
                   state: torch.Tensor | None, *, scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton decode step (contract of :func:`mixarch.ops.lightning.recurrent.lightning_step`): q, k
    ``[B, 1, H, Dk]``, v ``[B, 1, H, Dv]``, state ``[B, H, Dk, Dv]`` or None -> ``o`` ``[B, 1, H, Dv]`` (q's
    dtype) and the new fp32 state; ``state`` is not modified. Checks shapes, dtypes and devices only (no host
    sync: ``decay`` values are trusted), and is not differentiable."""
    reason = unsupported_step(q, k, v, decay, state, scale=scale)
    if reason is not None:
        raise MixarchError(f"lightning_step[triton] cannot run these inputs: {reason}")
    return _step(q.contiguous(), k.contiguous(), v.contiguous(), _decay(decay, q),
                 None if state is None else state.contiguous(), _scale(q, scale))
