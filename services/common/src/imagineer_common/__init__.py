"""Imagineer common."""
