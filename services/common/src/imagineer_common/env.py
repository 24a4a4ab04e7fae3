"""Small, strict readers for settings that come from environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tls reads its files through this module
    from imagineer_common.tls import ClientTls, ServerTls


class SettingError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def read_str(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def read_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name} must be an integer, got {raw!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise SettingError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def read_float(name: str, default: float, *, minimum: float, maximum: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name} must be a number, got {raw!r}") from None
    if not minimum <= value <= maximum:  # also refuses nan
        raise SettingError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def read_optional_port(name: str) -> int | None:
    """A port that may be left unset (the feature is off); 0 asks for any free port."""
    if read_str(name, "") == "":
        return None
    return read_int(name, 0, minimum=0, maximum=65535)


def read_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name} must be true or false, got {raw!r}")


def read_list(name: str) -> list[str]:
    raw = os.environ.get(name, "")
    return [item.strip() for item in raw.split(",") if item.strip()]


DEVELOPMENT_ADMIN_TOKEN = "imagineer-dev-token"


@dataclass(frozen=True)
class ModelServiceSettings:
    """The settings every model-running service (generator, trainer) has; each subclass adds its own."""

    data_dir: Path
    model: Path | None
    model_config: Path | None
    device: str
    host: str
    port: int
    admin_tokens: tuple[str, ...]
    catalog_address: str
    catalog_token: str
    production: bool
    log_level: str
    log_json: bool | None
    metrics_port: int | None  # None: no metrics endpoint
    health_port: int | None  # None: health only on the main port
    tls: ServerTls | None
    catalog_tls: ClientTls | None

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"


def read_model_service_basics(prefix: str, default_port: int) -> dict:
    """The fields of ModelServiceSettings, read the same way for every model-running service, as keyword
    arguments for the subclass's constructor."""
    from imagineer_common import tls

    data_dir = Path(read_str(prefix + "DATA_DIR", "instance")).resolve()
    production = read_str(prefix + "MODE", "development").lower() == "production"
    tokens = tuple(read_list(prefix + "ADMIN_TOKENS"))
    catalog_token = read_str(prefix + "CATALOG_TOKEN", "")
    if production and (not tokens or not catalog_token):
        raise SettingError(f"{prefix}ADMIN_TOKENS and {prefix}CATALOG_TOKEN must be set in production mode")
    model = read_str(prefix + "MODEL", "")
    model_config = read_str(prefix + "MODEL_CONFIG", "")
    device = read_str(prefix + "DEVICE", "auto").lower()
    if device not in ("auto", "cpu", "cuda"):
        raise SettingError(f"{prefix}DEVICE must be auto, cpu or cuda, got {device!r}")
    log_format = read_str(prefix + "LOG_FORMAT", "auto").lower()
    if log_format not in ("auto", "json", "text"):
        raise SettingError(f"{prefix}LOG_FORMAT must be auto, json or text")
    return {
        "data_dir": data_dir,
        "model": Path(model).expanduser().resolve() if model else None,
        "model_config": Path(model_config).expanduser().resolve() if model_config else None,
        "device": device,
        "host": read_str(prefix + "HOST", "127.0.0.1"),
        "port": read_int(prefix + "PORT", default_port, minimum=0, maximum=65535),
        "admin_tokens": tokens or (DEVELOPMENT_ADMIN_TOKEN,),
        "catalog_address": read_str(prefix + "CATALOG_ADDRESS", "127.0.0.1:50051"),
        "catalog_token": catalog_token or DEVELOPMENT_ADMIN_TOKEN,
        "production": production,
        "log_level": read_str(prefix + "LOG_LEVEL", "INFO"),
        "log_json": None if log_format == "auto" else log_format == "json",
        "metrics_port": read_optional_port(prefix + "METRICS_PORT"),
        "health_port": read_optional_port(prefix + "HEALTH_PORT"),
        "tls": tls.server_tls_from_env(prefix),
        "catalog_tls": tls.client_tls_from_env(prefix + "CATALOG_"),
    }
