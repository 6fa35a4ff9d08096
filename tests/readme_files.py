"""The files a newcomer brings to the README's commands (an APNs key, a Firebase service
account, an APNs certificate), made for the simulators of a running `pushline up` and
registered with them: `python tests/readme_files.py files DIR APNS_CONTROL_URL FCM_URL`;
and `… settle`, which waits (a minute at most) until every Message the README made is
final, but for the one spread over an hour, before the stack stops.

tests/test_readme.py runs this inside the stack's network namespace, in the directory the
README's blocks run in."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session, col

from schemas.db import engine_for
from schemas.tables import Message
from simulators.certs import issue_client_cert
from simulators.control import SimulatorControl
from simulators.credentials import make_apns_key, make_service_account, service_account_json

KEY_ID, TEAM_ID, TOPIC = "ABC123", "TEAM123456", "com.example.shop"  # as the README names them


def make_files(workdir: Path, apns_control: str, fcm: str) -> None:
    key = make_apns_key(TEAM_ID)
    (workdir / f"AuthKey_{KEY_ID}.p8").write_text(key.key_pem)
    SimulatorControl(apns_control).register_apns_key(KEY_ID, TEAM_ID, private_key_pem=key.key_pem)
    account = make_service_account("shop-project", f"{fcm}/token".replace("http:", "https:"))
    (workdir / "service-account.json").write_text(service_account_json(account))
    SimulatorControl(fcm).register_service_account(
        account["client_email"],
        account["private_key_id"],
        account["project_id"],
        private_key_pem=account["private_key"],
    )
    shutil.copy(issue_client_cert(workdir / ".pushline" / "tls", TOPIC), workdir / "push.pem")


def settle(database_url: str, timeout_s: float = 60) -> None:
    engine = engine_for(database_url)
    unfinished = col(Message.state).in_(["accepted", "dispatched"])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with Session(engine) as s:
            q = select(func.count()).where(unfinished, col(Message.deliver_over_s).is_(None))
            if s.execute(q).scalar_one() == 0:
                return
        time.sleep(0.2)


if __name__ == "__main__":
    if sys.argv[1] == "files":
        make_files(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        settle(os.environ["DATABASE_URL"])
