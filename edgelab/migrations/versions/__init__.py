"""Revision files, one per schema change; Alembic ignores this ``__init__``."""
