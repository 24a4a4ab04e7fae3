"""Helpers for tests that call services the way several clients at once, or expect them to refuse."""

from __future__ import annotations

import threading

import grpc
import pytest


def expect_error(code: grpc.StatusCode, call, *args, **kwargs) -> grpc.RpcError:
    """Calls ``call`` and returns the RpcError it must raise with ``code``."""
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    assert caught.value.code() == code, caught.value.details()
    return caught.value


def race(actions: list) -> list:
    """Runs each action in its own thread, all released at the same moment; returns their results in order."""
    barrier = threading.Barrier(len(actions))
    results: list = [None] * len(actions)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = actions[index]()
        except BaseException as error:  # reported by the calling thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    return results
