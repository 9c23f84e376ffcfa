"""Helpers shared by several test modules (fixtures live in tests/conftest.py).

Test modules import from here, never from one another, so that a test file can be read, moved or
deleted on its own.
"""
