"""Shared pytest configuration; the database fixtures live in the tests.fix_db plugin."""
