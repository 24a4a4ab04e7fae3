"""Training requests: every bad field named at once, defaults filled in, config round trip."""

from __future__ import annotations

import pytest

from imagineer_common.errors import InvalidArgument
from imagineer_trainer.request import TrainingRequest, complete


def done(request: TrainingRequest) -> TrainingRequest:
    return complete(request, model_name="imagineer/tiny-sd", default_size=64, random_seed=lambda: 4242)


def test_defaults():
    request = done(TrainingRequest(album_ids=["3"]))
    assert (request.rank, request.alpha, request.learning_rate, request.steps, request.batch_size) == (
        8, 8.0, 1e-4, 200, 4)
    assert request.resolution == 64 and request.lr_scheduler == "constant" and request.seed == 4242
    assert request.checkpoint_interval == 50 and request.base_model == "imagineer/tiny-sd"
    assert request.name == "LoRA from album 3"


def test_short_runs_checkpoint_at_their_end():
    assert done(TrainingRequest(album_ids=["3"], steps=20)).checkpoint_interval == 20


@pytest.mark.parametrize("fields, path", [
    ({"album_ids": []}, "album_ids"),
    ({"album_ids": ["x"]}, "album_ids[0]"),
    ({"album_ids": ["1", "1"]}, "album_ids"),
    ({"rank": 500}, "rank"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"lr_scheduler": "wavy"}, "lr_scheduler"),
    ({"steps": -5}, "steps"),
    ({"batch_size": 100}, "batch_size"),
    ({"resolution": 100}, "resolution"),
    ({"seed": -1}, "seed"),
    ({"base_model": "other/model"}, "base_model"),
    ({"validation_prompts": [" "]}, "validation_prompts[0]"),
    ({"checkpoint_interval": -1}, "checkpoint_interval"),
])
def test_each_bad_field_is_named(fields, path):
    request = TrainingRequest(album_ids=["1"])
    for name, value in fields.items():
        setattr(request, name, value)
    with pytest.raises(InvalidArgument) as caught:
        done(request)
    assert path in [v.field for v in caught.value.violations]


def test_all_problems_at_once():
    with pytest.raises(InvalidArgument) as caught:
        done(TrainingRequest(album_ids=[], rank=999, steps=-1))
    assert {v.field for v in caught.value.violations} == {"album_ids", "rank", "steps"}


def test_config_round_trip_survives_json_numbers():
    request = done(TrainingRequest(album_ids=["1", "2"], steps=30, seed=7, validation_prompts=["a fox"],
                                   request_id="key"))
    config = request.to_config()
    assert "request_id" not in config
    as_json = {k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in config.items()}
    back = TrainingRequest.from_config(as_json)
    assert back.steps == 30 and isinstance(back.steps, int) and back.seed == 7
    assert back.album_ids == ["1", "2"] and back.validation_prompts == ["a fox"]
