"""The samplers a request may name, and how each is built from a pipeline's own scheduler configuration.

A scheduler is stateful (timesteps, step index, the multistep solvers' history), so the renderer builds a fresh one
for every pipeline call with ``make_scheduler``; that is a ``from_config`` and takes well under a millisecond.

This module imports diffusers only inside ``make_scheduler``, so request validation can use ``SCHEDULERS`` and
``scheduler_names()`` without paying for torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SchedulerSpec:
    """One sampler: the diffusers class, the options that define it, and its name in A1111-style metadata."""

    name: str
    class_name: str
    label: str
    options: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()  # extra Python packages the diffusers class needs


_NO_KARRAS = {"use_karras_sigmas": False}
_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}

_ALL: tuple[SchedulerSpec, ...] = (
    SchedulerSpec("ddim", "DDIMScheduler", "DDIM"),
    SchedulerSpec("euler", "EulerDiscreteScheduler", "Euler", _NO_KARRAS),
    SchedulerSpec("euler_a", "EulerAncestralDiscreteScheduler", "Euler a"),
    SchedulerSpec("dpmpp_2m", "DPMSolverMultistepScheduler", "DPM++ 2M", {**_DPMPP_2M, **_NO_KARRAS}),
    SchedulerSpec(
        "dpmpp_2m_karras", "DPMSolverMultistepScheduler", "DPM++ 2M Karras", {**_DPMPP_2M, "use_karras_sigmas": True}
    ),
    SchedulerSpec(
        "dpmpp_2m_sde",
        "DPMSolverMultistepScheduler",
        "DPM++ 2M SDE",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, **_NO_KARRAS},
    ),
    SchedulerSpec("heun", "HeunDiscreteScheduler", "Heun", _NO_KARRAS),
    SchedulerSpec("pndm", "PNDMScheduler", "PLMS", {"skip_prk_steps": True}),
    SchedulerSpec("unipc", "UniPCMultistepScheduler", "UniPC", _NO_KARRAS),
    SchedulerSpec("lms", "LMSDiscreteScheduler", "LMS", _NO_KARRAS, requires=("scipy",)),
    SchedulerSpec("dpmpp_sde", "DPMSolverSDEScheduler", "DPM++ SDE", _NO_KARRAS, requires=("scipy", "torchsde")),
)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


SCHEDULERS: dict[str, SchedulerSpec] = {
    spec.name: spec for spec in _ALL if all(_installed(package) for package in spec.requires)
}
"""The samplers usable here, by request name. ``lms`` needs scipy and ``dpmpp_sde`` needs torchsde as well."""


class UnknownScheduler(KeyError):
    """A scheduler name that is not in SCHEDULERS (or whose extra packages are missing)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.choices = scheduler_names()
        missing = next((spec for spec in _ALL if spec.name == name), None)
        if missing is not None:
            needs = " and ".join(missing.requires)
            choices = ", ".join(self.choices)
            message = f"scheduler {name!r} needs {needs}, which is not installed; choose one of {choices}"
        else:
            message = f"unknown scheduler {name!r}; choose one of {', '.join(self.choices)}"
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.message


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def scheduler_label(name: str) -> str:
    """The sampler's name as A1111-style metadata writes it ("Euler a", "DPM++ 2M Karras"); unknown names as is."""
    spec = SCHEDULERS.get(name) or next((spec for spec in _ALL if spec.name == name), None)
    return spec.label if spec is not None else name


def make_scheduler(name: str, base_config: Mapping[str, Any]):  # -> diffusers.SchedulerMixin
    """A new scheduler of kind ``name`` built from ``base_config`` (normally ``pipeline.scheduler.config``).

    The model's own training settings (betas, ``steps_offset``, prediction type, timestep spacing...) are kept; only
    the options that define the sampler are set over them, so e.g. "euler" never inherits Karras sigmas from a
    model whose saved scheduler uses them.
    """
    spec = SCHEDULERS.get(name)
    if spec is None:
        raise UnknownScheduler(name)
    import diffusers

    scheduler_class = getattr(diffusers, spec.class_name)
    config = dict(base_config)
    config.update(spec.options)
    # Keys written by diffusers itself (_class_name, _diffusers_version) or meant for other classes are ignored.
    return scheduler_class.from_config(config)
