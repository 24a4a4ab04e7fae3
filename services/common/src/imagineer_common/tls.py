"""TLS settings for clusters without a service mesh: which certificate, key and authority files a server or a
client uses, read from settings (gRPC-free: the credentials are made in ``channels``).

A server reads <PREFIX>TLS_CERT_FILE and <PREFIX>TLS_KEY_FILE (both or neither) and, to require client
certificates signed by it, <PREFIX>TLS_CLIENT_CA_FILE. A client reads <PREFIX>TLS_CA_FILE (the authority
that signed the server) and, for servers that require one, <PREFIX>TLS_CERT_FILE and <PREFIX>TLS_KEY_FILE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagineer_common import env


@dataclass(frozen=True)
class ServerTls:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None  # set: clients must present a certificate signed by this authority


@dataclass(frozen=True)
class ClientTls:
    ca_file: Path | None  # None: the system's trusted authorities
    cert_file: Path | None
    key_file: Path | None


def read_file(path: Path, what: str) -> bytes:
    """A certificate or key file's bytes; SettingError naming the file when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise env.SettingError(f"cannot read the TLS {what} file {path}: {error.strerror}") from None


def _path(name: str) -> Path | None:
    value = env.read_str(name, "")
    return Path(value).expanduser() if value else None


def server_tls_from_env(prefix: str) -> ServerTls | None:
    """None (plaintext) unless <prefix>TLS_CERT_FILE and <prefix>TLS_KEY_FILE are set."""
    cert, key, client_ca = _path(prefix + "TLS_CERT_FILE"), _path(prefix + "TLS_KEY_FILE"), \
        _path(prefix + "TLS_CLIENT_CA_FILE")
    if (cert is None) != (key is None):
        raise env.SettingError(f"{prefix}TLS_CERT_FILE and {prefix}TLS_KEY_FILE must be set together")
    if cert is None:
        if client_ca is not None:
            raise env.SettingError(f"{prefix}TLS_CLIENT_CA_FILE needs {prefix}TLS_CERT_FILE and {prefix}TLS_KEY_FILE")
        return None
    return ServerTls(cert_file=cert, key_file=key, client_ca_file=client_ca)


def client_tls_from_env(prefix: str) -> ClientTls | None:
    """None (plaintext) unless <prefix>TLS_CA_FILE or a client certificate is set."""
    ca, cert, key = _path(prefix + "TLS_CA_FILE"), _path(prefix + "TLS_CERT_FILE"), _path(prefix + "TLS_KEY_FILE")
    if (cert is None) != (key is None):
        raise env.SettingError(f"{prefix}TLS_CERT_FILE and {prefix}TLS_KEY_FILE must be set together")
    if ca is None and cert is None:
        return None
    return ClientTls(ca_file=ca, cert_file=cert, key_file=key)
