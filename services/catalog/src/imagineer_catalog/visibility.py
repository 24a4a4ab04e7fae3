"""What an anonymous caller may see: public, non-NSFW images and public albums."""

from __future__ import annotations

from sqlalchemy import and_, false, or_, true

from imagineer_catalog.models import AlbumRow, ImageRow
from imagineer_common.auth import Caller


def visible_images(viewer: Caller):
    if viewer.is_admin:
        return true()
    return and_(ImageRow.is_public.is_(True), or_(ImageRow.is_nsfw.is_(None), ImageRow.is_nsfw == false()))


def visible_albums(viewer: Caller):
    return true() if viewer.is_admin else AlbumRow.is_public.is_(True)
