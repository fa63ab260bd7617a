"""The ``serve`` section: where and how the gRPC query service listens."""

from __future__ import annotations

from dataclasses import dataclass

from layers.config import check_fields


@dataclass
class ServeConfig:
    """Attributes:
        address: HOST:PORT to bind; loopback by default. Any other host needs a token.
        token: bearer token clients must send (None: ``$SWARM_TOKEN`` if set, else no auth).
        tls_cert, tls_key: PEM files; both or neither (then plaintext).
        max_message_mb: largest gRPC message either way, in MiB.
        max_text_bytes: largest prompt or text for Generate and Score.
        max_new_tokens: most tokens one Generate may ask for.
        chunk_bytes: default size of GetLevel and ExportAdapter chunks.
        level_ttl_ms: a level's version confirmed with its server less than this long ago is served
            from the service's cache without asking again (0: ask on every request). Bounds how stale
            an answer can be; saves a Ray round trip on back-to-back reads.
    """

    address: str = "127.0.0.1:50051"
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_message_mb: int = 16
    max_text_bytes: int = 65536
    max_new_tokens: int = 512
    chunk_bytes: int = 1 << 20
    level_ttl_ms: float = 50.0

    def __post_init__(self) -> None:
        host, sep, port = self.address.rpartition(":")
        check_fields("serve", self, address=bool(sep and host and port.isdigit() and int(port) < 65536),
                     tls_cert=(self.tls_cert is None) == (self.tls_key is None),
                     **{k: getattr(self, k) >= 1 for k in ("max_message_mb", "max_text_bytes", "max_new_tokens",
                                                           "chunk_bytes")},
                     level_ttl_ms=self.level_ttl_ms >= 0)
