"""Request validation: defaults, every rule's field path, seeds, templates and limits."""

from __future__ import annotations

import math

import pytest

from imagineer_common.errors import InvalidArgument
from imagineer_generator.plan import (
    DEFAULT_GUIDANCE,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    MAX_IMAGES_PER_JOB,
    MAX_IMAGES_PER_PROMPT,
    MAX_LORAS,
    MAX_SEED,
    GenerationPlan,
    GenerationRequest,
    LoraChoice,
    RenderSettings,
    TemplateSpec,
)
from imagineer_generator.validation import plan_generation

MODEL = "imagineer/tiny-sd"
SCHEDULERS = ("euler", "ddim", "dpmpp_2m_karras")


class FakeSeeds:
    def __init__(self, value: int = 4242) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.value


def plan(request: GenerationRequest, random_seed: FakeSeeds | None = None) -> GenerationPlan:
    return plan_generation(request, model_name=MODEL, default_size=512, schedulers=SCHEDULERS,
                           random_seed=random_seed or FakeSeeds())


def violations(request: GenerationRequest, random_seed: FakeSeeds | None = None) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as info:
        plan(request, random_seed)
    return [(v.field, v.description) for v in info.value.violations]


def fields(request: GenerationRequest) -> list[str]:
    return [field for field, _ in violations(request)]


def req(**kwargs) -> GenerationRequest:
    kwargs.setdefault("prompt", "a fox in the snow")
    return GenerationRequest(**kwargs)


# --- defaults and the plan -------------------------------------------------------------------------------


def test_defaults_are_filled():
    seeds = FakeSeeds(99)
    result = plan(req(), seeds)
    assert result.settings == RenderSettings(width=512, height=512, steps=DEFAULT_STEPS,
                                             guidance_scale=DEFAULT_GUIDANCE, scheduler=DEFAULT_SCHEDULER, loras=())
    assert [(t.index, t.prompt, t.seed) for t in result.tasks] == [(0, "a fox in the snow", 99)]
    assert seeds.calls == 1 and result.first_seed == 99
    assert result.base_model == MODEL
    assert result.album_id == "" and result.album_name == "Batch: a fox in the snow"
    assert result.template is None and result.make_public is False


def test_explicit_values_are_kept():
    request = req(negative_prompt="blurry", seed=7, steps=30, guidance_scale=1.0, scheduler="DDIM ", width=768,
                  height=64, base_model=MODEL, image_count=2, album_id="12", make_public=True,
                  loras=[LoraChoice("5", 0.0), LoraChoice("3", -0.5)])
    result = plan(request)
    assert result.settings == RenderSettings(width=768, height=64, steps=30, guidance_scale=1.0, scheduler="ddim",
                                             loras=(LoraChoice("5", 1.0), LoraChoice("3", -0.5)))
    assert [(t.negative_prompt, t.seed) for t in result.tasks] == [("blurry", 7), ("blurry", 8)]
    assert result.album_id == "12" and result.album_name == "" and result.make_public is True


def test_seeds_are_consecutive_from_the_given_seed_and_random_seed_is_not_drawn():
    seeds = FakeSeeds()
    result = plan(req(seed=1000, image_count=4), seeds)
    assert [(t.index, t.seed) for t in result.tasks] == [(0, 1000), (1, 1001), (2, 1002), (3, 1003)]
    assert seeds.calls == 0


def test_seed_zero_is_a_seed_not_random():
    seeds = FakeSeeds()
    assert plan(req(seed=0), seeds).first_seed == 0 and seeds.calls == 0


def test_random_seed_is_used_when_absent():
    seeds = FakeSeeds(123456)
    assert [t.seed for t in plan(req(image_count=3), seeds).tasks] == [123456, 123457, 123458]
    assert seeds.calls == 1


def test_seeds_wrap_instead_of_overflowing():
    assert [t.seed for t in plan(req(seed=MAX_SEED - 1, image_count=3)).tasks] == [MAX_SEED - 1, MAX_SEED, 0]


def test_random_seed_is_not_drawn_for_an_invalid_request():
    seeds = FakeSeeds()
    violations(req(steps=-1), seeds)
    assert seeds.calls == 0


def test_template_expands_in_row_order_with_a_running_index_and_seed():
    request = req(prompt="", seed=10, image_count=2, negative_prompt="ugly",
                  template=TemplateSpec("a {animal}", csv="animal\nfox\nowl\n"))
    result = plan(request)
    assert [(t.index, t.prompt, t.seed, t.negative_prompt) for t in result.tasks] == [
        (0, "a fox", 10, "ugly"), (1, "a fox", 11, "ugly"), (2, "a owl", 12, "ugly"), (3, "a owl", 13, "ugly")]
    assert result.template == "a {animal}" and result.album_name == "Set: a {animal}"


def test_default_album_names_are_cut_at_60_characters():
    long_prompt = "p" * 100
    assert plan(req(prompt=long_prompt)).album_name == "Batch: " + "p" * 60
    template = TemplateSpec("{a}" + "t" * 100, rows=[{"a": "x"}])
    assert plan(req(prompt="", template=template)).album_name == "Set: {a}" + "t" * 57


def test_album_name_given_is_used():
    assert plan(req(album_name="  Foxes  ")).album_name == "Foxes"


def test_lora_order_is_kept():
    loras = [LoraChoice("9", 0.5), LoraChoice("2", 1.5), LoraChoice("4", -4.0)]
    assert [lora.artifact_id for lora in plan(req(loras=loras)).settings.loras] == ["9", "2", "4"]


def test_limits_are_inclusive():
    loras = [LoraChoice(str(i), 4.0) for i in range(1, MAX_LORAS + 1)]
    result = plan(req(width=2048, height=2048, steps=150, guidance_scale=30.0, seed=MAX_SEED,
                      image_count=MAX_IMAGES_PER_PROMPT, loras=loras, album_name="n" * 255,
                      prompt="p" * 2000, negative_prompt="n" * 2000))
    assert len(result.tasks) == MAX_IMAGES_PER_PROMPT and len(result.settings.loras) == MAX_LORAS


def test_a_job_may_make_exactly_the_maximum_images():
    rows = [{"n": str(i)} for i in range(MAX_IMAGES_PER_JOB // MAX_IMAGES_PER_PROMPT)]
    request = req(prompt="", image_count=MAX_IMAGES_PER_PROMPT, template=TemplateSpec("{n}", rows=rows))
    assert len(plan(request).tasks) == MAX_IMAGES_PER_JOB


# --- one rule at a time ----------------------------------------------------------------------------------


@pytest.mark.parametrize("request_, field", [
    (req(prompt=""), "parameters.prompt"),
    (req(prompt="   "), "parameters.prompt"),
    (req(prompt="p" * 2001), "parameters.prompt"),
    (req(negative_prompt="n" * 2001), "parameters.negative_prompt"),
    (req(width=-8), "parameters.width"),
    (req(width=60), "parameters.width"),
    (req(width=56), "parameters.width"),
    (req(width=2056), "parameters.width"),
    (req(width=513), "parameters.width"),
    (req(height=100), "parameters.height"),
    (req(steps=-1), "parameters.steps"),
    (req(steps=151), "parameters.steps"),
    (req(guidance_scale=0.5), "parameters.guidance_scale"),
    (req(guidance_scale=-2.0), "parameters.guidance_scale"),
    (req(guidance_scale=30.5), "parameters.guidance_scale"),
    (req(guidance_scale=math.nan), "parameters.guidance_scale"),
    (req(guidance_scale=math.inf), "parameters.guidance_scale"),
    (req(scheduler="lms"), "parameters.scheduler"),
    (req(base_model="other/model"), "parameters.base_model"),
    (req(seed=-1), "parameters.seed"),
    (req(seed=MAX_SEED + 1), "parameters.seed"),
    (req(image_count=-1), "image_count"),
    (req(image_count=MAX_IMAGES_PER_PROMPT + 1), "image_count"),
    (req(loras=[LoraChoice(str(i), 1.0) for i in range(1, MAX_LORAS + 2)]), "loras"),
    (req(loras=[LoraChoice("", 1.0)]), "loras[0].artifact_id"),
    (req(loras=[LoraChoice("1", 1.0), LoraChoice("abc", 1.0)]), "loras[1].artifact_id"),
    (req(loras=[LoraChoice("0", 1.0)]), "loras[0].artifact_id"),
    (req(loras=[LoraChoice("-3", 1.0)]), "loras[0].artifact_id"),
    (req(loras=[LoraChoice("007", 1.0)]), "loras[0].artifact_id"),
    (req(loras=[LoraChoice(" 7", 1.0)]), "loras[0].artifact_id"),
    (req(loras=[LoraChoice("²", 1.0)]), "loras[0].artifact_id"),
    (req(loras=[LoraChoice(str(2**63), 1.0)]), "loras[0].artifact_id"),
    (req(loras=[LoraChoice("3", 1.0), LoraChoice("4", 1.0), LoraChoice("3", 0.5)]), "loras[2].artifact_id"),
    (req(loras=[LoraChoice("3", 4.5)]), "loras[0].weight"),
    (req(loras=[LoraChoice("1", 1.0), LoraChoice("3", -4.01)]), "loras[1].weight"),
    (req(loras=[LoraChoice("3", math.nan)]), "loras[0].weight"),
    (req(album_id="abc"), "album_id"),
    (req(album_id="0"), "album_id"),
    (req(album_name="n" * 256), "album_name"),
    (req(album_id="4", album_name="Foxes"), "album_name"),
    (req(template=TemplateSpec("a {animal}", rows=[{"animal": "fox"}])), "parameters.prompt"),
    (req(prompt="", template=TemplateSpec("", rows=[{"a": "x"}])), "template.template"),
    (req(prompt="", template=TemplateSpec("{a.b}", rows=[{"a": "x"}])), "template.template"),
    (req(prompt="", template=TemplateSpec("{a}", csv="")), "template.csv"),
    (req(prompt="", template=TemplateSpec("{a}", csv="b\nx\n")), "template.csv"),
    (req(prompt="", template=TemplateSpec("{a}", rows=[])), "template.structured"),
    (req(prompt="", template=TemplateSpec("{a}", rows=[{"b": "x"}])), "template.structured"),
])
def test_each_rule_names_its_field(request_, field):
    assert fields(request_) == [field]


def test_base_model_message_names_the_loaded_model():
    (_, description), = violations(req(base_model="sdxl"))
    assert MODEL in description


def test_scheduler_message_lists_the_choices():
    (_, description), = violations(req(scheduler="lms"))
    assert all(name in description for name in SCHEDULERS)


def test_duplicate_lora_message_points_at_the_first():
    (_, description), = violations(req(loras=[LoraChoice("3", 1.0), LoraChoice("3", 0.5)]))
    assert "loras[0]" in description


def test_too_many_images_in_a_job_is_refused():
    rows = [{"n": str(i)} for i in range(MAX_IMAGES_PER_JOB // MAX_IMAGES_PER_PROMPT + 1)]
    request = req(prompt="", image_count=MAX_IMAGES_PER_PROMPT, template=TemplateSpec("{n}", rows=rows))
    (field, description), = violations(request)
    assert field == "image_count" and str(MAX_IMAGES_PER_JOB) in description and "17 template rows" in description


def test_template_alone_is_enough_without_a_prompt():
    template = TemplateSpec("a {animal}", rows=[{"animal": "fox"}])
    assert [t.prompt for t in plan(req(prompt="  ", template=template)).tasks] == ["a fox"]


# --- all at once -----------------------------------------------------------------------------------------


def test_all_violations_are_reported_at_once():
    request = GenerationRequest(
        prompt="also a prompt", negative_prompt="n" * 2001, seed=-5, steps=999, guidance_scale=0.1,
        scheduler="nope", width=10, height=5000, base_model="other", image_count=99,
        loras=[LoraChoice("", 9.0), LoraChoice("x", 1.0)], album_id="-1", album_name="n" * 300,
        template=TemplateSpec("{animal}", csv="animal,animal\nfox,owl\n"))
    assert fields(request) == [
        "parameters.prompt", "template.csv", "parameters.negative_prompt", "parameters.width", "parameters.height",
        "parameters.steps", "parameters.guidance_scale", "parameters.scheduler", "parameters.base_model",
        "parameters.seed", "image_count", "loras[0].artifact_id", "loras[0].weight", "loras[1].artifact_id",
        "album_id", "album_name", "album_name",
    ]


def test_the_error_message_summarises_every_violation():
    with pytest.raises(InvalidArgument) as info:
        plan(req(prompt="", steps=-1))
    assert "parameters.prompt" in info.value.message and "parameters.steps" in info.value.message
