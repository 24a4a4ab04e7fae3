"""Imagineer catalog."""
