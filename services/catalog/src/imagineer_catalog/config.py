"""Catalog settings, read once at start-up from IMAGINEER_CATALOG_* variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagineer_common import env
from imagineer_common.tls import ServerTls, server_tls_from_env

PREFIX = "IMAGINEER_CATALOG_"
# The token every service uses in development mode when none is configured.



@dataclass(frozen=True)
class CatalogSettings:
    data_dir: Path
    database_url: str
    storage_root: Path
    host: str
    port: int
    admin_tokens: tuple[str, ...]
    production: bool
    auto_upgrade: bool
    log_level: str
    log_json: bool | None
    metrics_port: int | None  # None: no metrics endpoint
    health_port: int | None  # None: health only on the main port
    tls: ServerTls | None

    @classmethod
    def from_env(cls) -> CatalogSettings:
        data_dir = Path(env.read_str(PREFIX + "DATA_DIR", "instance")).resolve()
        production = env.read_str(PREFIX + "MODE", "development").lower() == "production"
        tokens = tuple(env.read_list(PREFIX + "ADMIN_TOKENS"))
        if not tokens:
            if production:
                raise env.SettingError(f"{PREFIX}ADMIN_TOKENS must be set in production mode")
            tokens = (env.DEVELOPMENT_ADMIN_TOKEN,)
        log_json_raw = env.read_str(PREFIX + "LOG_FORMAT", "auto").lower()
        if log_json_raw not in ("auto", "json", "text"):
            raise env.SettingError(f"{PREFIX}LOG_FORMAT must be auto, json or text")
        return cls(
            data_dir=data_dir,
            database_url=env.read_str(PREFIX + "DATABASE_URL", f"sqlite:///{data_dir / 'imagineer.db'}"),
            storage_root=Path(env.read_str(PREFIX + "STORAGE_ROOT", str(data_dir / "blobs"))).resolve(),
            host=env.read_str(PREFIX + "HOST", "127.0.0.1"),
            port=env.read_int(PREFIX + "PORT", 50051, minimum=0, maximum=65535),
            admin_tokens=tokens,
            production=production,
            # Clusters run migrations as a Job and turn this off.
            auto_upgrade=env.read_bool(PREFIX + "AUTO_UPGRADE", not production),
            log_level=env.read_str(PREFIX + "LOG_LEVEL", "INFO"),
            log_json=None if log_json_raw == "auto" else log_json_raw == "json",
            metrics_port=env.read_optional_port(PREFIX + "METRICS_PORT"),
            health_port=env.read_optional_port(PREFIX + "HEALTH_PORT"),
            tls=server_tls_from_env(PREFIX),
        )
