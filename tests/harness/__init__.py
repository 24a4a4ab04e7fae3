"""Test support: run Imagineer services as real processes and talk to them like a client."""
