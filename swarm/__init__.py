"""The user's surface: CLI, configuration, and (later) the gRPC service and experiments."""

__version__ = "0.1.0"
