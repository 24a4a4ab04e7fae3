"""What labeling reads from and writes to the catalog: images and album members, labels, the NSFW flag.

An addition to the trainer's catalog client, kept apart so that labeling's needs stay in one place."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import field_mask_pb2

from imagineer.catalog.v1 import catalog_service_pb2 as api
from imagineer.catalog.v1 import resources_pb2 as res
from imagineer_common.catalog_client import TrainingCatalog
from imagineer_trainer.labeling_jobs import TargetImage

LABEL_TYPES = {"caption": res.LABEL_TYPE_CAPTION, "tag": res.LABEL_TYPE_TAG, "manual": res.LABEL_TYPE_MANUAL,
               "user": res.LABEL_TYPE_USER, "ai_generated": res.LABEL_TYPE_AI_GENERATED}
TYPE_NAMES = {number: name for name, number in LABEL_TYPES.items()}


@dataclass(frozen=True)
class LabelInfo:
    id: str
    label_type: str  # a key of LABEL_TYPES ("" when the catalog sends a type this code does not know)
    text: str
    source_model: str


class LabelingCatalog(TrainingCatalog):
    def image(self, image_id: str) -> tuple[TargetImage, bool]:
        """The image as a labeling target and whether its NSFW flag is set."""
        image = self._call("GetImage", self._stub.GetImage, api.GetImageRequest(id=image_id))
        return TargetImage(image_id=image.id, has_file=image.has_file), image.is_nsfw

    def album_targets(self, album_id: str) -> list[TargetImage]:
        """The album's images in album order (each once)."""
        targets: dict[str, TargetImage] = {}
        token = ""
        while True:
            page = self._call("ListAlbumImages", self._stub.ListAlbumImages,
                              api.ListAlbumImagesRequest(album_id=album_id, page_size=500, page_token=token))
            for entry in page.album_images:
                targets.setdefault(entry.image.id, TargetImage(image_id=entry.image.id, has_file=entry.image.has_file))
            token = page.next_page_token
            if not token:
                return list(targets.values())

    def labels(self, image_id: str) -> list[LabelInfo]:
        found: list[LabelInfo] = []
        token = ""
        while True:
            page = self._call("ListLabels", self._stub.ListLabels,
                              api.ListLabelsRequest(image_id=image_id, page_size=1000, page_token=token))
            found.extend(LabelInfo(id=label.id, label_type=TYPE_NAMES.get(label.label_type, ""), text=label.text,
                                   source_model=label.source_model) for label in page.labels)
            token = page.next_page_token
            if not token:
                return found

    def create_label(self, image_id: str, *, text: str, label_type: str, source_model: str, source_prompt: str,
                     created_by: str) -> str:
        """The new label's id (or the id of an identical label the image already has)."""
        label = res.Label(text=text, label_type=LABEL_TYPES[label_type], source_model=source_model,
                          source_prompt=source_prompt, created_by=created_by)
        return self._call("CreateLabel", self._stub.CreateLabel,
                          api.CreateLabelRequest(image_id=image_id, label=label)).id

    def delete_label(self, label_id: str) -> None:
        self._call("DeleteLabel", self._stub.DeleteLabel, api.DeleteLabelRequest(id=label_id))

    def flag_nsfw(self, image_id: str) -> None:
        self._call("UpdateImage", self._stub.UpdateImage, api.UpdateImageRequest(
            image=res.Image(id=image_id, is_nsfw=True), update_mask=field_mask_pb2.FieldMask(paths=["is_nsfw"])))
