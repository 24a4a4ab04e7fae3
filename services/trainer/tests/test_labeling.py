"""Labeling jobs against an in-memory catalog: relabel rules, NSFW flags, per-image failures, cancel, restart."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

import pytest

from imagineer_common.catalog_client import CatalogError
from imagineer_common.errors import FailedPrecondition, InvalidArgument, NotFound
from imagineer_trainer.labelers.base import ImageLabels, LabelerUnavailable, LabelingError
from imagineer_trainer.labelers.config import LabelingSettings
from imagineer_trainer.labeling import LabelingRequest, LabelingService, write_labels
from imagineer_trainer.labeling_catalog import LabelInfo
from imagineer_trainer.labeling_jobs import COMPLETED, FAILED, INTERRUPTED, RUNNING, LabelingStore, TargetImage


@dataclass
class FakeCatalog:
    images: dict[str, bytes] = field(default_factory=dict)  # id -> bytes (b"" = no stored file)
    albums: dict[str, list[str]] = field(default_factory=dict)
    labels_by_image: dict[str, list[LabelInfo]] = field(default_factory=dict)
    nsfw: set[str] = field(default_factory=set)
    fail_create_after: int | None = None  # CreateLabel fails once this many more labels were created
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def image(self, image_id):
        if image_id not in self.images:
            raise CatalogError("GetImage failed: NOT_FOUND", "NOT_FOUND")
        return TargetImage(image_id, bool(self.images[image_id])), image_id in self.nsfw

    def album_targets(self, album_id):
        if album_id not in self.albums:
            raise CatalogError("ListAlbumImages failed: NOT_FOUND", "NOT_FOUND")
        return [TargetImage(i, bool(self.images[i])) for i in self.albums[album_id]]

    def image_bytes(self, image_id):
        return self.images[image_id]

    def labels(self, image_id):
        return list(self.labels_by_image.get(image_id, []))

    def create_label(self, image_id, *, text, label_type, source_model, source_prompt, created_by):
        existing = self.labels_by_image.setdefault(image_id, [])
        for label in existing:  # the catalog answers an identical label with the existing one
            if (label.text, label.label_type, label.source_model) == (text, label_type, source_model):
                return label.id
        if self.fail_create_after is not None:
            if self.fail_create_after == 0:
                raise CatalogError("CreateLabel failed: UNAVAILABLE", "UNAVAILABLE")
            self.fail_create_after -= 1
        label = LabelInfo(id=str(next(self._ids)), label_type=label_type, text=text, source_model=source_model)
        existing.append(label)
        return label.id

    def delete_label(self, label_id):
        for labels in self.labels_by_image.values():
            labels[:] = [label for label in labels if label.id != label_id]

    def flag_nsfw(self, image_id):
        self.nsfw.add(image_id)

    def close(self):
        pass

    def texts(self, image_id):
        return sorted((label.label_type, label.text, label.source_model) for label in self.labels(image_id))


class FakeLabeler:
    name = "anthropic"
    source_model = "anthropic:fake-model"
    source_prompt = "describe it"

    def __init__(self, answers=None, gate: threading.Event | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[bytes] = []
        self.gate = gate
        self.called = threading.Event()

    def label(self, image):
        self.calls.append(image)
        self.called.set()
        if self.gate is not None:
            self.gate.wait(5)
        answer = self.answers.get(image, ImageLabels("a red fox", ("red fox", "tall grass"), "safe"))
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_relabeling_replaces_only_this_labelers_labels():
    catalog = FakeCatalog(images={"1": b"img"})
    catalog.labels_by_image["1"] = [
        LabelInfo("m1", "manual", "my own words", ""), LabelInfo("u1", "user", "legacy", ""),
        LabelInfo("o1", "caption", "another caption", "local:tiny-blip"),
        LabelInfo("o2", "tag", "scraped alt text", "scraper:alt")]
    labeler = FakeLabeler()
    first = write_labels(catalog, "1", ImageLabels("a red fox", ("red fox", "grass"), "safe"), labeler)
    assert first.replaced == 0
    second = write_labels(catalog, "1", ImageLabels("a red fox", ("red fox", "night sky"), "adult"), labeler)
    assert second.replaced == 2 and second.flag_set  # "grass" and "nsfw:safe" went; the rest were identical
    assert catalog.texts("1") == sorted([
        ("manual", "my own words", ""), ("user", "legacy", ""), ("caption", "another caption", "local:tiny-blip"),
        ("tag", "scraped alt text", "scraper:alt"), ("caption", "a red fox", "anthropic:fake-model"),
        ("tag", "red fox", "anthropic:fake-model"), ("tag", "night sky", "anthropic:fake-model"),
        ("ai_generated", "nsfw:adult", "anthropic:fake-model")])
    third = write_labels(catalog, "1", ImageLabels("a red fox", ("red fox", "night sky"), "safe"), labeler)
    assert not third.flag_set and "1" in catalog.nsfw  # a later "safe" never clears the flag


def test_a_failure_half_way_keeps_the_old_labels_and_removes_the_partial_new_ones():
    catalog = FakeCatalog(images={"1": b"img"})
    labeler = FakeLabeler()
    write_labels(catalog, "1", ImageLabels("old caption", ("old tag",), "safe"), labeler)
    before = catalog.texts("1")
    catalog.fail_create_after = 1
    with pytest.raises(CatalogError):
        write_labels(catalog, "1", ImageLabels("new caption", ("new tag", "more"), "explicit"), labeler)
    assert catalog.texts("1") == before and not catalog.nsfw


def test_a_captioner_without_rating_writes_no_rating_and_leaves_the_flag():
    catalog = FakeCatalog(images={"1": b"img"})
    write_labels(catalog, "1", ImageLabels("a cat", (), None), FakeLabeler())
    assert catalog.texts("1") == [("caption", "a cat", "anthropic:fake-model")] and not catalog.nsfw


def make_service(tmp_path, catalog, labeler, **settings) -> LabelingService:
    service = LabelingService(settings=LabelingSettings(default="anthropic", **settings), catalog=catalog,
                              store=LabelingStore(tmp_path / "labelings"), labelers={"anthropic": labeler})
    service.recover()
    service.start_worker()
    return service


def finish(service, job):
    events = list(service.watch(job.id, 0, lambda: True))
    assert events[-1].kind == "finished"
    return events


def test_an_album_with_a_failing_and_a_fileless_image_completes_with_a_summary(tmp_path):
    catalog = FakeCatalog(images={"1": b"a", "2": b"b", "3": b"", "4": b"d"}, albums={"A": ["1", "2", "3", "4"]})
    labeler = FakeLabeler({b"b": LabelingError("the model refused"),
                           b"d": ImageLabels("explicit scene", ("nude",), "explicit")})
    service = make_service(tmp_path, catalog, labeler)
    job = service.start(LabelingRequest("album", "A"))
    events = finish(service, job)
    assert [e.kind for e in events] == ["queued", "started", "image", "image", "image", "image", "finished"]
    snapshot = events[-1].snapshot
    assert snapshot.state == COMPLETED and (snapshot.labeled, snapshot.failed, snapshot.skipped) == (2, 1, 1)
    assert [(p.image_id, p.outcome, p.reason) for p in snapshot.problems] == [
        ("2", "failed", "the model refused"), ("3", "skipped", "the image has no stored file")]
    assert events[5].data["nsfw_flag_set"] and catalog.nsfw == {"4"}
    assert not catalog.labels("2") and len(catalog.labels("1")) == 4
    service.stop(5)


def test_an_unavailable_labeler_fails_the_job_at_once(tmp_path):
    catalog = FakeCatalog(images={"1": b"a", "2": b"b"}, albums={"A": ["1", "2"]})
    labeler = FakeLabeler({b"a": LabelerUnavailable("bad key")})
    service = make_service(tmp_path, catalog, labeler)
    snapshot = finish(service, service.start(LabelingRequest("album", "A")))[-1].snapshot
    assert snapshot.state == FAILED and snapshot.error == "bad key" and snapshot.images_done == 1
    assert labeler.calls == [b"a"]
    service.stop(5)


def test_cancel_stops_between_images(tmp_path):
    catalog = FakeCatalog(images={"1": b"a", "2": b"b", "3": b"c"}, albums={"A": ["1", "2", "3"]})
    gate = threading.Event()
    labeler = FakeLabeler(gate=gate)
    service = make_service(tmp_path, catalog, labeler)
    job = service.start(LabelingRequest("album", "A"))
    assert labeler.called.wait(5)  # the first image is with the labeler
    service.cancel(job.id)
    gate.set()
    snapshot = finish(service, job)[-1].snapshot
    assert snapshot.state == "cancelled" and snapshot.labeled == 1 and "after 1 of 3 images" in snapshot.error
    with pytest.raises(FailedPrecondition):
        service.cancel(job.id)
    service.stop(5)


def test_validation(tmp_path):
    catalog = FakeCatalog(images={"1": b"a"}, albums={"empty": []})
    service = make_service(tmp_path, catalog, FakeLabeler())
    with pytest.raises(InvalidArgument, match="target"):
        service.start(LabelingRequest("", ""))
    with pytest.raises(InvalidArgument, match="album_id: is required"):
        service.start(LabelingRequest("album", " "))
    with pytest.raises(NotFound, match=r"album nope \(album_id\)"):
        service.start(LabelingRequest("album", "nope"))
    with pytest.raises(NotFound, match=r"image 9 \(image_id\)"):
        service.start(LabelingRequest("image", "9"))
    with pytest.raises(FailedPrecondition, match="holds no images"):
        service.start(LabelingRequest("album", "empty"))
    with pytest.raises(InvalidArgument, match="labeler"):
        service.start(LabelingRequest("image", "1", labeler="gpt"))
    with pytest.raises(FailedPrecondition, match="local labeler is not configured"):
        service.start(LabelingRequest("image", "1", labeler="local"))
    with pytest.raises(InvalidArgument, match="after_sequence"):
        list(service.watch("x", -1, lambda: True))
    with pytest.raises(NotFound):
        service.get("nope")
    first = service.start(LabelingRequest("image", "1", request_id="r1"))
    assert service.start(LabelingRequest("image", "1", request_id="r1")) is first
    finish(service, first)
    service.stop(5)


class BlockingLabeler(FakeLabeler):
    """Blocks on one image's bytes until released: a labeling caught half-way."""

    def __init__(self, blocked: bytes) -> None:
        super().__init__()
        self.blocked, self.reached, self.release = blocked, threading.Event(), threading.Event()

    def label(self, image):
        if image == self.blocked:
            self.reached.set()
            self.release.wait(10)
        return super().label(image)


def restart(tmp_path, catalog, labeler=None) -> LabelingService:
    """A new service on the same records, as a new trainer process would be."""
    return make_service(tmp_path, catalog, labeler or FakeLabeler())


def test_a_crashed_labeling_resumes_after_the_last_image_it_handled(tmp_path):
    catalog = FakeCatalog(images={"1": b"a", "2": b"b", "3": b"c", "4": b"d"}, albums={"A": ["1", "2", "3", "4"]})
    blocking = BlockingLabeler(blocked=b"c")
    service = make_service(tmp_path, catalog, blocking)
    done = service.start(LabelingRequest("image", "1"))
    finish(service, done)
    running = service.start(LabelingRequest("album", "A", request_id="again"))
    assert blocking.reached.wait(10) and running.state == RUNNING and running.images_done == 2

    # A crash: the worker never gets further; a new service reads the records.
    labeler = FakeLabeler()
    restarted = LabelingService(settings=LabelingSettings(default="anthropic"), catalog=catalog,
                                store=LabelingStore(tmp_path / "labelings"), labelers={"anthropic": labeler})
    assert restarted.recover() == 1
    assert restarted.get(done.id).state == COMPLETED and restarted.get(done.id).labeled == 1
    assert [e.kind for e in restarted.watch(done.id, 0, lambda: True)] == ["finished"]
    restarted.start_worker()
    events = finish(restarted, restarted.get(running.id))
    assert [e.kind for e in events] == ["queued", "started", "image", "image", "finished"]
    assert events[1].data == {"total_images": 4, "images_done": 2}
    assert [e.data["index"] for e in events if e.kind == "image"] == [3, 4]
    assert labeler.calls == [b"c", b"d"], "the images handled before the crash are not labeled again"
    snapshot = events[-1].snapshot
    assert snapshot.state == COMPLETED and (snapshot.images_done, snapshot.labeled) == (4, 4) and not snapshot.error
    assert all(catalog.texts(i) == catalog.texts("1") for i in "234")
    assert restarted.start(LabelingRequest("album", "A", request_id="again")).id == running.id
    blocking.release.set()
    service.stop(5)
    restarted.stop(5)


def test_a_stop_interrupts_running_and_waiting_labelings_and_the_next_start_finishes_both(tmp_path):
    catalog = FakeCatalog(images={"1": b"a", "2": b"b", "3": b"c", "4": b"d"},
                          albums={"A": ["1", "2", "3"], "B": ["4"]})
    blocking = BlockingLabeler(blocked=b"b")
    service = make_service(tmp_path, catalog, blocking)
    first = service.start(LabelingRequest("album", "A"))
    assert blocking.reached.wait(10)
    second = service.start(LabelingRequest("album", "B"))
    stopper = threading.Thread(target=service.stop, args=(10,))
    stopper.start()
    while not service.queue.stopping:
        threading.Event().wait(0.01)
    blocking.release.set()  # the running image finishes; the labeling stops before the next one
    stopper.join(10)
    assert (first.state, second.state) == (INTERRUPTED, INTERRUPTED)
    assert "resumes on restart" in first.error and "resumes on restart" in second.error

    restarted = restart(tmp_path, catalog)
    finish(restarted, restarted.get(first.id))
    finish(restarted, restarted.get(second.id))
    again = [restarted.get(first.id), restarted.get(second.id)]
    assert [(job.state, job.images_done, job.labeled) for job in again] == [(COMPLETED, 3, 3), (COMPLETED, 1, 1)]
    assert all(catalog.texts(i) for i in "1234")
    restarted.stop(5)


def test_settings(monkeypatch, tmp_path):
    from imagineer_common.env import SettingError

    assert LabelingSettings.from_env().available() == () and LabelingSettings.from_env().default == ""
    monkeypatch.setenv("IMAGINEER_TRAINER_LABELER", "anthropic")
    with pytest.raises(SettingError, match="IMAGINEER_TRAINER_LABELER_ANTHROPIC_API_KEY is not set"):
        LabelingSettings.from_env()
    monkeypatch.setenv("IMAGINEER_TRAINER_LABELER_ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("IMAGINEER_TRAINER_LABELER_ANTHROPIC_MAX_ATTEMPTS", "2")
    settings = LabelingSettings.from_env()
    assert settings.default == "anthropic" and settings.anthropic.retry.max_attempts == 2
    assert settings.anthropic.base_url == "https://api.anthropic.com" and "sk-secret" not in repr(settings)
    monkeypatch.setenv("IMAGINEER_TRAINER_LABELER", "gpt")
    with pytest.raises(SettingError, match="must be one of local, anthropic"):
        LabelingSettings.from_env()
    monkeypatch.setenv("IMAGINEER_TRAINER_LABELER", "local")
    monkeypatch.setenv("IMAGINEER_TRAINER_LABELER_LOCAL_MODEL", str(tmp_path))
    with pytest.raises(SettingError, match=r"IMAGINEER_TRAINER_LABELER_LOCAL_MODEL: .*cannot be read"):
        LabelingSettings.from_env()


def test_the_demo_captioner_setting_names_a_folder_under_the_models_folder(monkeypatch, tmp_path):
    from imagineer_common.env import SettingError

    monkeypatch.setenv("IMAGINEER_TRAINER_LABELER_LOCAL_MODEL", "demo")
    settings = LabelingSettings.from_env(models_dir=tmp_path / "models")
    assert settings.default == "local"
    assert settings.local.build_demo and settings.local.model_dir == tmp_path / "models" / "imagineer-tiny-blip"
    assert not settings.local.model_dir.exists()  # built by the first labeling, not at start-up
    with pytest.raises(SettingError, match="needs a models folder"):
        LabelingSettings.from_env()
