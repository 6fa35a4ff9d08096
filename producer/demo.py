"""`pushline demo`: the whole stack on the embedded default, about 1,000 devices, two pushes."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from producer.client import PushlineClient
from producer.stack import Stack
from schemas.api import DeliveryOut, MessageStatus
from schemas.codes import CODE_MEANINGS, FINAL_STATUSES

DEVICES = 1000
# Tokens the simulators are scripted to refuse, so the demo shows codes 6 and 7.
UNREGISTERED_APNS = 5
BAD_APNS = 3
UNREGISTERED_FCM = 4
# Every tenth device is a browser subscribed at the Web Push simulator; these many of them
# unsubscribe before the pushes (410 Gone, code 7).
WEB_EVERY = 10
GONE_WEB = 2
# Every tenth device, the fifth of each ten, is a Huawei phone reached through Push Kit;
# these many of them uninstalled the app (80300007, code 7).
HMS_EVERY = 10
HMS_AT = 5
UNINSTALLED_HMS = 2


def apns_token(i: int) -> str:
    return f"{i:064x}"


def fcm_token(i: int) -> str:
    return f"demo-fcm-token:{i:012d}-APA91b"


def hms_token(i: int) -> str:
    return f"demo-hms-token{i:012d}AAAA"


def _android(i: int) -> bool:
    """Odd devices that are neither browsers nor Huawei phones go through FCM."""
    return i % 2 == 1 and i % WEB_EVERY != WEB_EVERY - 1 and i % HMS_EVERY != HMS_AT


def run_demo(state_dir: Path, console: Console, timeout_s: float = 120.0) -> int:
    redis_url = os.environ.get("REDIS_URL")
    database_url = os.environ.get("DATABASE_URL")
    state_dir.mkdir(parents=True, exist_ok=True)
    if database_url is None:
        db = state_dir / "pushline.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)  # a demo starts from nothing
    with Stack(state_dir, redis_url=redis_url, database_url=database_url) as stack:
        with console.status("starting Redis, the simulators, the API and a worker…"):
            stack.start()
            creds = stack.add_app(f"demo-{int(time.time())}")
        console.print(
            f"API on {stack.api_url} (docs at {stack.api_url}/docs); state in {state_dir}"
        )
        client = PushlineClient(stack.api_url, creds.api_key)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("registering devices", total=DEVICES)
            web: list[str] = []
            for i in range(DEVICES):
                user = "alice" if i < 3 else f"user{i % 300}"
                body: dict[str, Any] = {"username": user, "device_id": f"demo-{i}"}
                if i % WEB_EVERY == WEB_EVERY - 1:
                    sub = stack.webpush.subscribe_webpush(creds.webpush_public_key)
                    body.update(token=sub["endpoint"], keys=sub["keys"])
                    web.append(sub["endpoint"])
                elif i % HMS_EVERY == HMS_AT:
                    body.update(token=hms_token(i), provider="hms")
                else:
                    token = f"iOS:{apns_token(i)}" if i % 2 == 0 else f"android:{fcm_token(i)}"
                    body["token"] = token
                client.register(body)
                progress.advance(task)
        ios = [apns_token(i) for i in range(0, DEVICES, 2) if i % WEB_EVERY != WEB_EVERY - 1]
        android = [fcm_token(i) for i in range(1, DEVICES, 2) if _android(i)]
        huawei = [hms_token(i) for i in range(HMS_AT, DEVICES, HMS_EVERY)]
        for t in huawei[-UNINSTALLED_HMS:]:
            stack.hms.script(token=t, then="INVALID_TOKEN")
        for endpoint in web[-GONE_WEB:]:
            stack.webpush.unsubscribe_webpush(endpoint)
        for t in ios[-UNREGISTERED_APNS:]:
            stack.apns.script(token=t, then="Unregistered")
        for t in ios[-UNREGISTERED_APNS - BAD_APNS : -UNREGISTERED_APNS]:
            stack.apns.script(token=t, then="BadDeviceToken")
        for t in android[-UNREGISTERED_FCM:]:
            stack.fcm.script(token=t, then="UNREGISTERED")

        one = client.push(
            {
                "target": {"type": "users", "usernames": ["alice"]},
                "payload": {
                    "alert": {"title": "Hello Alice", "body": "Your order has shipped."},
                    "data": {"order": 42},
                },
            }
        )
        everyone = client.push(
            {
                "target": {"type": "application"},
                "payload": {
                    "alert": {"title": "Pushline demo", "body": "A broadcast to every device."},
                    "badge": 1,
                    "sound": "default",
                },
            }
        )
        statuses = _follow(
            client, [("push to alice", one.id), ("broadcast", everyone.id)], console, timeout_s
        )

        by: Counter[tuple[str, int | None]] = Counter()
        for st in statuses:
            for page in _deliveries(client, st.id):
                for d in page:
                    by[(d.status, d.code)] += 1
        table = Table(title="Deliveries by status and result code")
        for col in ("status", "code", "meaning", "count"):
            table.add_column(col, justify="right" if col in ("code", "count") else "left")
        for (status, code), n in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            table.add_row(status, str(code), CODE_MEANINGS.get(code or 0, ""), str(n))
        console.print(table)

        apns_stats, fcm_stats = stack.apns.stats(), stack.fcm.stats()
        web_stats, hms_stats = stack.webpush.stats(), stack.hms.stats()
        sims = Table(title="What the simulators received")
        for col in ("simulator", "requests", "accepted", "rejected", "duplicates"):
            sims.add_column(col, justify="left" if col == "simulator" else "right")
        all_stats = (
            ("APNs", apns_stats),
            ("FCM", fcm_stats),
            ("Web Push", web_stats),
            ("Push Kit", hms_stats),
        )
        for name, s in all_stats:
            rejected = ", ".join(f"{k} {v}" for k, v in s["rejected"].items()) or "0"
            sims.add_row(
                name,
                str(s["requests_total"]),
                str(s["accepted_total"]),
                rejected,
                str(s["duplicates"]),
            )
        console.print(sims)

        sent = sum(n for (status, _), n in by.items() if status == "SENT")
        accepted = sum(s["accepted_total"] for _, s in all_stats)
        all_final = all(status in FINAL_STATUSES for status, _ in by)
        ok = all_final and sent == accepted and all(s.state == "done" for s in statuses)
        verdict = "[green]OK[/]" if ok else "[red]FAILED[/]"
        console.print(
            f"{verdict}: {sum(by.values())} deliveries, {sent} SENT, "
            f"simulators accepted {accepted}, every delivery final: {all_final}"
        )
        return 0 if ok else 1


def _follow(
    client: PushlineClient, msgs: list[tuple[str, str]], console: Console, timeout_s: float
) -> list[MessageStatus]:
    deadline = time.monotonic() + timeout_s
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks = {mid: progress.add_task(label, total=None) for label, mid in msgs}
        while True:
            statuses = [client.message(mid) for _, mid in msgs]
            for st in statuses:
                final = sum(n for s, n in st.by_status.items() if s != "QUEUED")
                progress.update(tasks[st.id], total=max(st.total, 1), completed=final)
            if all(s.state in ("done", "failed") for s in statuses):
                return statuses
            if time.monotonic() > deadline:
                console.print("[red]timed out waiting for deliveries[/]")
                return statuses
            time.sleep(0.2)


def _deliveries(client: PushlineClient, message_id: str) -> Iterator[list[DeliveryOut]]:
    cursor = None
    while True:
        page = client.deliveries(message_id, cursor=cursor, limit=1000)
        yield page.items
        if not page.next_cursor:
            return
        cursor = page.next_cursor
