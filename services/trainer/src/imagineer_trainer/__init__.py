"""Imagineer trainer."""
