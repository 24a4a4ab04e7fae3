"""A small client for the Imagineer services: connect, generate and wait, fetch images.

    from imagineer_client import Imagineer

    with Imagineer() as client:                      # addresses and token from IMAGINEER_* variables
        job = client.generate("a castle at dusk", steps=20, seed=7, images=2)
        for event in client.watch(job.id):
            ...
        data = client.download_image(job.images[0].image_id)
"""

from imagineer_client.client import Imagineer, ImagineerError

__all__ = ["Imagineer", "ImagineerError"]
