"""Stable Diffusion model handling shared by the generator and the trainer.

Loading a model from a local diffusers folder or a single checkpoint, building the offline demo model, and
the scheduler choices. No service logic and no gRPC: both services use it the same way.
"""
