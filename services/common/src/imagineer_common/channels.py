"""gRPC channels and credentials: plaintext or TLS (from ``tls`` settings), with the load-balancing policy
each kind of service needs."""

from __future__ import annotations

import json

import grpc

from imagineer_common.tls import ClientTls, ServerTls, read_file

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


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """The server's certificate and key; with a client CA, clients must present a certificate it signed."""
    ca = read_file(tls.client_ca_file, "client CA") if tls.client_ca_file else None
    return grpc.ssl_server_credentials([(read_file(tls.key_file, "key"), read_file(tls.cert_file, "certificate"))],
                                       root_certificates=ca, require_client_auth=ca is not None)


def channel_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=read_file(tls.ca_file, "CA") if tls.ca_file else None,
        private_key=read_file(tls.key_file, "key") if tls.key_file else None,
        certificate_chain=read_file(tls.cert_file, "certificate") if tls.cert_file else None)


def open_channel(address: str, tls: ClientTls | None = None, *, per_connection: bool = False) -> grpc.Channel:
    """A channel to ``address`` (``host:port`` or ``dns:///host:port``), over TLS when ``tls`` is given;
    calls go round-robin over the addresses, or with ``per_connection`` all to one address picked at random."""
    options = PER_CONNECTION if per_connection else ROUND_ROBIN
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, channel_credentials(tls), options=options)
