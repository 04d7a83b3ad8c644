"""The conformance suite over every shipped kind (``tests/_conformance.py``).

Every registered kind x every implementation serving it x every feature it supports,
values and every gradient against an independent float64 Python loop. Kinds registered
in test files call :func:`_conformance.check_kind` themselves
(``tests/test_extensibility.py``, ``tests/test_extensibility_linear.py``).
"""

from __future__ import annotations

import _conformance
import pytest

from jaxseq.impls import IMPLS, impls_for
from jaxseq.layer import FEATURES
from jaxseq.recurrences import registered

KINDS = sorted(registered())


@pytest.mark.parametrize("kind", KINDS)
def test_kind_conforms(kind):
    _conformance.check_kind(kind)


def test_capability_table_names_known_features_and_every_kind_has_the_basics():
    for row in IMPLS:
        assert set(row.supports) <= set(FEATURES), (row.name, set(row.supports) - set(FEATURES))
    for kind, rec in registered().items():
        names = set(impls_for(rec))
        assert {"fused", "unfused", "reference"} <= names, (kind, sorted(names))
