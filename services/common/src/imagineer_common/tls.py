"""TLS for clusters without a service mesh: server credentials (optionally requiring client certificates)
and client channels, configured by file paths read from settings.

A server reads <PREFIX>TLS_CERT_FILE and <PREFIX>TLS_KEY_FILE (both or neither) and, to require client
certificates signed by it, <PREFIX>TLS_CLIENT_CA_FILE. A client reads <PREFIX>TLS_CA_FILE (the authority
that signed the server) and, for servers that require one, <PREFIX>TLS_CERT_FILE and <PREFIX>TLS_KEY_FILE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import grpc

from imagineer_common import env

_MESSAGE_LIMITS = (
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
)
# With a ``dns:///name:port`` target naming a headless Service, the name resolves to every ready pod.
# Stateless services (the catalog: every call is its own transaction) take calls round-robin over all of them.
ROUND_ROBIN = (("grpc.lb_policy_name", "round_robin"), *_MESSAGE_LIMITS)
# Services that keep jobs in memory (generator, trainer) need a job's Start, Watch and Cancel on the pod that
# holds it: each channel picks one pod, at random (shuffled), and stays there, so connections spread instead.
PER_CONNECTION = (("grpc.service_config",
                   json.dumps({"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": True}}]})),
                  *_MESSAGE_LIMITS)


@dataclass(frozen=True)
class ServerTls:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None  # set: clients must present a certificate signed by this authority

    def credentials(self) -> grpc.ServerCredentials:
        ca = _read(self.client_ca_file, "client CA") if self.client_ca_file else None
        return grpc.ssl_server_credentials([(_read(self.key_file, "key"), _read(self.cert_file, "certificate"))],
                                           root_certificates=ca, require_client_auth=ca is not None)


@dataclass(frozen=True)
class ClientTls:
    ca_file: Path | None  # None: the system's trusted authorities
    cert_file: Path | None
    key_file: Path | None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA") if self.ca_file else None,
            private_key=_read(self.key_file, "key") if self.key_file else None,
            certificate_chain=_read(self.cert_file, "certificate") if self.cert_file else None)


def _read(path: Path, what: str) -> bytes:
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


def open_channel(address: str, tls: ClientTls | None = None, *, per_connection: bool = False) -> grpc.Channel:
    """A channel to ``address`` (``host:port`` or ``dns:///host:port``), over TLS when ``tls`` is given;
    calls go round-robin over the addresses, or with ``per_connection`` all to one address picked at random."""
    options = PER_CONNECTION if per_connection else ROUND_ROBIN
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, tls.credentials(), options=options)
