"""How many examples a property test runs: its own count, or `FUZZ_FACTOR` times it under `make fuzz`."""

from __future__ import annotations

from hypothesis import settings

FUZZ = "fuzz"
"""The Hypothesis profile of `make fuzz` (registered in conftest.py): random seeds, `FUZZ_FACTOR` times the examples."""
FUZZ_FACTOR = 10


def examples(count: int) -> int:
    """`count`, times `FUZZ_FACTOR` when the fuzz profile is loaded; call it where the test's settings are made."""
    return count * FUZZ_FACTOR if settings.get_current_profile_name() == FUZZ else count
