"""Property tests and fuzzing: the journal store against a model, the wire decoders, the HTTP APIs."""

from __future__ import annotations

from hypothesis import settings


def examples(count: int) -> settings:
    """``count`` examples under the ``ci`` profile (100 examples), scaled with the loaded profile's
    ``max_examples``: ``HYPOTHESIS_PROFILE=thorough`` runs 20 times as many."""
    return settings(max_examples=max(1, count * settings().max_examples // 100))
