"""PyTorch interop: ``state_dict`` <-> jaxseq modules by torch name, checkpoint files, and
whole-module conversion.

Because jaxseq keeps torch's parameter names and layouts, a torch ``state_dict`` maps
onto a jaxseq module with no transposes for the recurrent layers. Layouts that differ
between the frameworks (e.g. ``nnx.Linear`` stores ``kernel`` as (in, out) where torch's
``weight`` is (out, in)) are listed once, in :data:`LAYOUT`.

Whole modules: :func:`from_torch` / :func:`to_torch` build the twin module with the same
configuration and weights. Checkpoints: :func:`save` / :func:`load` write and read
safetensors files under the torch names, the same files that ``torchseq.checkpoint.save``
/ ``load`` write and read.
"""

from jaxseq.interop import convert as _convert
from jaxseq.interop import state_dict as _state_dict
from jaxseq.interop.convert import from_torch, to_torch
from jaxseq.interop.flax import (
    carry_from_flax,
    carry_to_flax,
    flax_cell_kind,
    from_flax_cell,
    to_flax_cell,
)
from jaxseq.interop.state_dict import (
    load,
    load_torch_state_dict,
    save,
    to_torch_state_dict,
    torch_named_params,
)

#: ``(module type, torch name) -> (nnx attribute, to_jax, to_torch)``: one table for every
#: layout that is not the identity (``nnx.Linear``'s kernel is torch's weight transposed).
#: Extended by the model zoo.
LAYOUT = _state_dict.LAYOUT
#: The supported (torch class, jaxseq class) pairs of :func:`from_torch` / :func:`to_torch`,
#: as ``"module:name"`` strings.
SUPPORTED = _convert.SUPPORTED

__all__ = [
    "load_torch_state_dict",
    "to_torch_state_dict",
    "torch_named_params",
    "LAYOUT",
    "save",
    "load",
    "from_torch",
    "to_torch",
    "SUPPORTED",
    "from_flax_cell",
    "to_flax_cell",
    "flax_cell_kind",
    "carry_from_flax",
    "carry_to_flax",
]
