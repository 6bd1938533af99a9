"""Alembic migrations of the results database (run them with ``edgelab db upgrade``).

This is a package only so that ``env.py``, ``script.py.mako`` and ``versions/`` ship
inside the wheel; Alembic itself loads these files by path.
"""
