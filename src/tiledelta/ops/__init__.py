"""Operating tiledelta: ``watch`` (poll and update on a schedule) and ``doctor`` (checks)."""
