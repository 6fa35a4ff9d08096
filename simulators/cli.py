"""Command line for the simulators; Pushline's `pushline simulate ...` delegates to `main`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators",
        description="Run a fake APNs, FCM, Web Push or Huawei Push Kit service (tests, demos).",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="logging level (default: warning; per-request lines never go above debug)",
    )
    sub = parser.add_subparsers(dest="provider", required=True)

    apns = sub.add_parser("apns", help="fake APNs: HTTP/2 over TLS")
    apns.add_argument("--host", default="127.0.0.1")
    apns.add_argument("--port", type=int, default=2197, help="TLS port (0 = pick a free one)")
    apns.add_argument(
        "--control-port", type=int, default=2198, help="plain-HTTP control port (0 = free)"
    )
    apns.add_argument(
        "--tls-dir",
        type=Path,
        default=Path(".simulators/tls"),
        help="where ca.pem, server.pem/.key live (created if missing)",
    )
    apns.add_argument("--log-level", dest="sub_log_level", default=None)

    fcm = sub.add_parser("fcm", help="fake FCM HTTP v1 + OAuth token endpoint")
    fcm.add_argument("--host", default="127.0.0.1")
    fcm.add_argument("--port", type=int, default=2199, help="HTTP port (0 = pick a free one)")
    fcm.add_argument("--log-level", dest="sub_log_level", default=None)

    webpush = sub.add_parser(
        "webpush", help="fake browser push service: subscriptions, VAPID, decryption"
    )
    webpush.add_argument("--host", default="127.0.0.1")
    webpush.add_argument("--port", type=int, default=2200, help="port (0 = pick a free one)")
    webpush.add_argument("--log-level", dest="sub_log_level", default=None)

    hms = sub.add_parser("hms", help="fake Huawei Push Kit: OAuth token endpoint and messages:send")
    hms.add_argument("--host", default="127.0.0.1")
    hms.add_argument("--port", type=int, default=2201, help="port (0 = pick a free one)")
    hms.add_argument("--log-level", dest="sub_log_level", default=None)
    return parser


def _announce(line: str) -> None:
    # One line on stdout is the readiness signal scripts and test fixtures wait for.
    print(line, flush=True)


_ANNOUNCED = re.compile(r"listening on [^:\s]+:(\d+)(?: \(control :(\d+)\))?")


def announced_ports(output: str) -> tuple[int, int | None] | None:
    """The port (and the APNs control port) a simulator's readiness line gives, or None
    when `output` holds no such line yet."""
    found = _ANNOUNCED.search(output)
    if found is None:
        return None
    return int(found[1]), int(found[2]) if found[2] else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level: str = (args.sub_log_level or args.log_level).lower()
    logging.basicConfig(level=level.upper(), stream=sys.stderr)

    if args.provider == "apns":
        from simulators import apns

        host = args.host

        def ready_apns(port: int, control: int) -> None:
            _announce(f"apns simulator listening on {host}:{port} (control :{control})")

        coro = apns.serve(host, args.port, args.control_port, args.tls_dir, level, ready_apns)
    elif args.provider == "fcm":
        from simulators import fcm

        host = args.host

        def ready_fcm(port: int) -> None:
            _announce(f"fcm simulator listening on {host}:{port}")

        coro = fcm.serve(host, args.port, level, ready_fcm)
    elif args.provider == "hms":
        from simulators import hms

        host = args.host

        def ready_hms(port: int) -> None:
            _announce(f"hms simulator listening on {host}:{port}")

        coro = hms.serve(host, args.port, level, ready_hms)
    else:
        from simulators import webpush

        host = args.host

        def ready_webpush(port: int) -> None:
            _announce(f"webpush simulator listening on {host}:{port}")

        coro = webpush.serve(host, args.port, level, ready_webpush)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
