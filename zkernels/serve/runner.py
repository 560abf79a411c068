"""Running the app under uvicorn, with the two things uvicorn alone does not do:
- a bounded drain: on SIGTERM (or SIGINT) new requests get 503 at once, and requests still unanswered
  shutdown_timeout_s later get 503 and are dropped, so the process exits within that time (Kubernetes
  kills a pod 30 s after SIGTERM by default);
- a failed warm-up, or a device thread that ended, stops the process with a non-zero exit status
  instead of leaving /health at 503 (an orchestrator restarts it).
"""
from __future__ import annotations

import ipaddress
import socket

import uvicorn


class Runner(uvicorn.Server):
    """uvicorn.Server that tells the app's Server when shutdown begins."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.app_server = config.app.state.server
        self.app_server.on_fatal = self.stop

    def stop(self) -> None:
        self.should_exit = True

    async def shutdown(self, sockets=None) -> None:
        self.app_server.begin_drain(self.config.timeout_graceful_shutdown)
        await super().shutdown(sockets)


def make_runner(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> Runner:
    limits = app.state.server.limits
    return Runner(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                 timeout_graceful_shutdown=limits.shutdown_timeout_s))


def serve(app, host: str, port: int, log_level: str = "info") -> int:
    """Runs until SIGTERM/SIGINT, or until the server cannot serve; the exit status (`exit_status`)."""
    runner = make_runner(app, host, port, log_level)
    runner.run()
    return exit_status(app)


def exit_status(app) -> int:
    """0, or 1 when the server stopped because it could not serve (failed warm-up, device thread ended)."""
    return 1 if app.state.server.failed is not None else 0


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server to this machine ("localhost", 127.x, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False
