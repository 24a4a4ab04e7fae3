"""Labelers: turn an image into a training caption, tags and an NSFW rating. No gRPC, no catalog here.

``base`` holds what every labeler returns and the normalization of it, ``answer`` parses a hosted model's
JSON answer, ``retry`` the HTTP retry policy, ``anthropic`` and ``local`` the two labelers, ``config`` their
settings and the choice between them.
"""
