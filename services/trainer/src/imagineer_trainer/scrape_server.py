"""The scraping gRPC servicer: translate, call the domain (scraping.service.Scraper), translate back."""

from __future__ import annotations

from imagineer.common.v1 import common_pb2
from imagineer.trainer.v1 import scraping_service_pb2 as api
from imagineer.trainer.v1 import scraping_service_pb2_grpc as api_grpc
from imagineer_common.errors import InvalidArgument, Unavailable
from imagineer_common.eventlog import Event
from imagineer_common.timestamps import timestamp_message
from imagineer_trainer.scraping.jobs import ScrapeSnapshot
from imagineer_trainer.scraping.request import FOLLOW_ALL, SAME_SITE, ScrapeRequest
from imagineer_trainer.scraping.service import Scraper

SERVICE_NAME = api.DESCRIPTOR.services_by_name["ScrapingService"].full_name
STATES = {name.removeprefix("JOB_STATE_").lower(): value for name, value in common_pb2.JobState.items() if value}
LINK_POLICIES = {api.LINK_POLICY_UNSPECIFIED: SAME_SITE, api.LINK_POLICY_SAME_SITE: SAME_SITE,
                 api.LINK_POLICY_FOLLOW_ALL: FOLLOW_ALL}


def request_from_proto(message: api.StartScrapeRequest) -> ScrapeRequest:
    if message.link_policy not in LINK_POLICIES:
        raise InvalidArgument.for_field("link_policy", f"{message.link_policy} is not a known value")
    return ScrapeRequest(
        source_url=message.source_url, max_depth=message.max_depth if message.HasField("max_depth") else None,
        max_pages=message.max_pages, max_images=message.max_images, link_policy=LINK_POLICIES[message.link_policy],
        min_width=message.min_width, min_height=message.min_height, allowed_formats=list(message.allowed_formats),
        album_name=message.album_name, request_id=message.request_id)


def request_message(request: ScrapeRequest) -> api.StartScrapeRequest:
    policy = api.LINK_POLICY_FOLLOW_ALL if request.link_policy == FOLLOW_ALL else api.LINK_POLICY_SAME_SITE
    message = api.StartScrapeRequest(
        source_url=request.source_url, max_pages=request.max_pages, max_images=request.max_images,
        link_policy=policy, min_width=request.min_width, min_height=request.min_height,
        allowed_formats=request.allowed_formats, album_name=request.album_name, request_id=request.request_id)
    if request.max_depth is not None:
        message.max_depth = request.max_depth
    return message


def scrape_message(scrape: ScrapeSnapshot) -> api.Scrape:
    return api.Scrape(
        id=scrape.id, request=request_message(scrape.request), state=STATES.get(scrape.state, 0), stage=scrape.stage,
        pages_seen=scrape.pages_seen, images_found=scrape.images_found, images_kept=scrape.images_kept,
        images_skipped=scrape.images_skipped, skip_reasons=scrape.skip_reasons, error_count=scrape.error_count,
        error_message=scrape.error, album_id=scrape.album_id, create_time=timestamp_message(scrape.created_at),
        start_time=timestamp_message(scrape.started_at), end_time=timestamp_message(scrape.ended_at))


def event_message(event: Event[ScrapeSnapshot]) -> api.WatchScrapeResponse | None:
    message = api.WatchScrapeResponse(sequence=event.sequence, scrape=scrape_message(event.snapshot))
    data = event.data
    if event.kind == "stage":
        message.stage.stage = data["stage"]
    elif event.kind == "page":
        message.page.CopyFrom(api.ScrapePageEvent(url=data["url"], depth=data["depth"],
                                                  skip_reason=data["skip_reason"]))
    elif event.kind == "image":
        message.image.CopyFrom(api.ScrapeImageEvent(url=data["url"], image_id=data["image_id"],
                                                    skip_reason=data["skip_reason"]))
    elif event.kind == "finished":
        message.finished.CopyFrom(api.ScrapeFinishedEvent(state=STATES.get(data["state"], 0), reason=data["reason"]))
    else:
        return None
    return message


class ScrapingServicer(api_grpc.ScrapingServiceServicer):
    def __init__(self) -> None:
        self.scraper: Scraper | None = None  # set once start-up recovery is done
        self.load_error = ""

    def _ready(self) -> Scraper:
        if self.load_error:
            raise Unavailable(f"scraping could not start: {self.load_error}; see the trainer log",
                              reason="SCRAPER_START_FAILED")
        if self.scraper is None:
            raise Unavailable("the trainer is still starting", reason="STARTING")
        return self.scraper

    def StartScrape(self, request, context):
        return scrape_message(self._ready().start(request_from_proto(request)))

    def GetScrape(self, request, context):
        return scrape_message(self._ready().get(request.id))

    def ListScrapes(self, request, context):
        scrapes, token = self._ready().list(request.page_size, request.page_token)
        return api.ListScrapesResponse(scrapes=[scrape_message(s) for s in scrapes], next_page_token=token)

    def CancelScrape(self, request, context):
        return scrape_message(self._ready().cancel(request.id))

    def WatchScrape(self, request, context):
        for event in self._ready().watch(request.id, request.after_sequence, context.is_active):
            message = event_message(event)
            if message is not None:
                yield message
