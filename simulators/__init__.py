"""Provider simulators: a fake APNs (HTTP/2 + TLS) and a fake FCM (HTTP v1 + OAuth)."""

from simulators.control import SimulatorControl

__all__ = ["SimulatorControl"]
