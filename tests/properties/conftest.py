"""Hypothesis profiles for the property tests.

``ci`` (the default) keeps every test fast on a small shared machine; ``thorough``
runs twenty times as many examples, for a local hunt (longer than the per-test timeout):
``HYPOTHESIS_PROFILE=thorough pytest tests/properties --timeout=0``. A failing example is
printed with the seed and a ``@reproduce_failure`` blob to replay it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    print_blob=True,
    database=None,  # nothing written to the working tree; replay a failure with its printed blob
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    parent=settings.get_profile("ci"),
    max_examples=2_000,
    stateful_step_count=60,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
