"""How users type-check against aiobligations' public API (checked by mypy, not run by pytest)."""
