"""Helpers the tests share: generated images, a tiny trained package, live servers.

Fixtures live in the ``conftest.py`` files; everything importable lives here.
"""
