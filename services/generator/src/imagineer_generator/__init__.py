"""Imagineer generator."""
