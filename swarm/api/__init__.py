"""The gRPC surface of a swarm (``swarm.v1.SharedMemory``).

:mod:`swarm.api.proto` (the proto and its committed stubs), :mod:`swarm.api.servicer` (the
RPCs over a run's level servers and agents), :mod:`swarm.api.server` (grpc.aio with health,
reflection, bearer auth, TLS and size limits; ``swarm serve``), :mod:`swarm.api.client`
(``swarm query``), :mod:`swarm.api.model` (the local model that answers Generate and Score).
"""
