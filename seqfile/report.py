"""The state-dict mismatch report, computed once for every loader of both frameworks.

``compare`` finds the missing keys, unexpected keys and shape mismatches between what a
module expects and what a checkpoint (or a params dict) holds; ``torch_parts`` words
them as ``torch.nn.Module.load_state_dict`` does, ``mismatch_report`` tersely, for the
functional API. Imports neither jax nor torch.

>>> m = compare({"w": (2, 3), "b": (2,)}, {"w": (3, 3), "extra": (1,)})
>>> torch_parts(m)
["Missing key(s) in state_dict: ['b']", "Unexpected key(s) in state_dict: ['extra']", 'size mismatch: w: checkpoint has (3, 3), module expects (2, 3)']
>>> mismatch_report({"w": (2, 3)}, {"w": (3, 3)})
['shape mismatches: w: expected (2, 3), got (3, 3)']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

__all__ = ["Mismatch", "compare", "torch_parts", "load_error", "mismatch_report", "dtype_error"]

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """What does not fit: sorted missing and unexpected names, and (name, got, expected)."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[tuple[str, Shape, Shape]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)


def compare(expected: Mapping[str, Shape], got: Mapping[str, Shape]) -> Mismatch:
    """Compare ``{name: shape}`` expected by a module with ``{name: shape}`` it was given."""
    return Mismatch(
        missing=sorted(set(expected) - set(got)),
        unexpected=sorted(set(got) - set(expected)),
        shapes=[
            (k, tuple(got[k]), tuple(expected[k]))
            for k in expected
            if k in got and tuple(got[k]) != tuple(expected[k])
        ],
    )


def torch_parts(m: Mismatch, strict: bool = True) -> list[str]:
    """torch's wording; with ``strict=False`` missing and unexpected keys are not errors."""
    parts = []
    if strict and m.missing:
        parts.append(f"Missing key(s) in state_dict: {m.missing}")
    if strict and m.unexpected:
        parts.append(f"Unexpected key(s) in state_dict: {m.unexpected}")
    if m.shapes:
        parts.append(
            "size mismatch: "
            + "; ".join(f"{k}: checkpoint has {g}, module expects {e}" for k, g, e in m.shapes)
        )
    return parts


def load_error(module_name: str, parts: Sequence[str]) -> str:
    """The whole message: ``Error(s) in loading state_dict for NAME:`` and one part a line."""
    return f"Error(s) in loading state_dict for {module_name}:\n  " + "\n  ".join(parts)


def dtype_error(path: str, module_name: str, bad: Sequence[tuple[str, str, str]]) -> str:
    """Message for non-floating checkpoint tensors given to floating parameters."""
    return f"Error(s) in loading {path} into {module_name}:\n  dtype mismatch: " + "; ".join(
        f"{k}: checkpoint has {got}, module expects a floating point dtype ({want})"
        for k, got, want in bad
    )


def mismatch_report(expected: Mapping[str, Shape], got: Mapping[str, Shape]) -> list[str]:
    """Terse parts (``missing keys [...]``, ``unexpected keys [...]``, ``shape mismatches: ...``)."""
    m = compare(expected, got)
    parts = []
    if m.missing:
        parts.append(f"missing keys {m.missing}")
    if m.unexpected:
        parts.append(f"unexpected keys {m.unexpected}")
    if m.shapes:
        parts.append(
            "shape mismatches: " + "; ".join(f"{k}: expected {e}, got {g}" for k, g, e in m.shapes)
        )
    return parts
