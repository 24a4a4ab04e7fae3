"""The common runtime: error mapping, tokens, settings."""

from __future__ import annotations

import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from imagineer_common import auth, env, errors, grpc_errors


def _status_proto(status):
    # grpc.Status carries the serialized google.rpc.Status in its trailing metadata.
    for key, value in status.trailing_metadata:
        if key == rpc_status.GRPC_DETAILS_METADATA_KEY:
            return status_pb2.Status.FromString(value)
    raise AssertionError("no details")


def test_invalid_argument_carries_field_violations_and_reason():
    error = errors.InvalidArgument.for_field("album.name", "is required")
    proto = _status_proto(grpc_errors.to_status(error, domain="test"))
    assert proto.code == code_pb2.INVALID_ARGUMENT
    infos, bad_requests = [], []
    for detail in proto.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            bad_requests.append(bad)
    assert infos[0].reason == "INVALID_ARGUMENT" and infos[0].domain == "test"
    assert [v.field for v in bad_requests[0].field_violations] == ["album.name"]


@pytest.mark.parametrize("error, code", [
    (errors.NotFound("x", reason="IMAGE_NOT_FOUND"), code_pb2.NOT_FOUND),
    (errors.FailedPrecondition("x"), code_pb2.FAILED_PRECONDITION),
    (errors.AlreadyExists("x"), code_pb2.ALREADY_EXISTS),
    (errors.Unauthenticated("x"), code_pb2.UNAUTHENTICATED),
    (errors.ResourceExhausted("x"), code_pb2.RESOURCE_EXHAUSTED),
    (errors.Unavailable("x"), code_pb2.UNAVAILABLE),
])
def test_each_domain_error_has_its_code(error, code):
    assert _status_proto(grpc_errors.to_status(error, domain="d")).code == code


def test_collector_reports_every_bad_field_at_once():
    collector = errors.ViolationCollector()
    collector.check(False, "a", "bad")
    collector.check(True, "b", "fine")
    collector.add("c", "bad too")
    with pytest.raises(errors.InvalidArgument) as caught:
        collector.raise_if_any()
    assert [v.field for v in caught.value.violations] == ["a", "c"]


@pytest.mark.parametrize("metadata, token", [
    ((("authorization", "Bearer abc"),), "abc"),
    ((("Authorization", "bearer  abc "),), "abc"),
    ((("authorization", "Basic abc"),), None),
    ((("authorization", "Bearer "),), None),
    ((), None),
])
def test_bearer_token_parsing(metadata, token):
    assert auth.bearer_token(metadata) == token


def test_token_validation():
    assert auth.token_is_valid("t1", frozenset({"t0", "t1"}))
    assert not auth.token_is_valid("t2", frozenset({"t0", "t1"}))
    assert not auth.token_is_valid("t", frozenset())


def test_settings_readers_name_the_variable(monkeypatch):
    monkeypatch.setenv("X_PORT", "abc")
    with pytest.raises(env.SettingError, match="X_PORT"):
        env.read_int("X_PORT", 1)
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(env.SettingError, match="X_FLAG"):
        env.read_bool("X_FLAG", True)
    monkeypatch.setenv("X_LIST", " a, ,b ")
    assert env.read_list("X_LIST") == ["a", "b"]


def test_in_memory_paging_walks_every_item_once():
    from imagineer_common.paging import page_of

    items = [str(n) for n in range(7, 0, -1)]
    seen, token = [], ""
    while True:
        page, token = page_of(items, 3, token, key=str)
        seen.extend(page)
        if not token:
            break
    assert seen == items
    with pytest.raises(errors.InvalidArgument):
        page_of(items, -1, "", key=str)
    with pytest.raises(errors.InvalidArgument):
        page_of(items, 3, "unknown", key=str)
    assert page_of(items, 0, "", key=str)[0] == items
