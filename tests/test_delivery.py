"""End to end: REST in, Celery fan-out and deliver, the simulators out, every outcome recorded."""

from __future__ import annotations

from sqlmodel import Session

from schemas.db import engine_for
from schemas.tables import Registration
from tests.conftest import AppHandle, accepted


def test_apns_push_to_a_user_is_sent_once_and_recorded_with_its_apns_id(any_app: AppHandle) -> None:
    token = any_app.ios("ann")
    st = any_app.push_users(
        "ann", alert={"title": "Hello", "body": "World"}, badge=3, data={"order": 42}
    )
    assert (st.state, st.by_status, st.by_code) == ("done", {"SENT": 1}, {"0": 1})
    [d] = any_app.client.deliveries(st.id).items
    assert (d.status, d.code, d.attempts, d.provider) == ("SENT", 0, 1, "apns")
    assert d.provider_ref == d.id  # the apns-id Pushline sent is the Delivery id
    assert accepted(any_app.stack.apns.stats(), token) == 1
    [req] = any_app.stack.apns.requests(token)
    assert req["headers"]["apns-topic"] == any_app.creds.apns_topic
    assert req["headers"]["apns-push-type"] == "alert"
    assert req["headers"]["apns-priority"] == "10"
    assert req["headers"]["apns-id"] == d.id
    assert req["body"] == {
        "order": 42,
        "aps": {"alert": {"title": "Hello", "body": "World"}, "badge": 3},
        "notificationId": d.id,  # so the app can report RECEIVED / CONSUMED for it
    }


def test_fcm_push_is_sent_with_string_data_and_records_the_message_name(any_app: AppHandle) -> None:
    token = any_app.android("bob")
    st = any_app.push_users(
        "bob", alert={"title": "Hi", "body": "there"}, data={"n": 7, "flag": True, "s": "x"}
    )
    assert st.by_code == {"0": 1}
    [d] = any_app.client.deliveries(st.id).items
    assert d.provider_ref and d.provider_ref.startswith(
        f"projects/{any_app.creds.fcm_project}/messages/"
    )
    assert accepted(any_app.stack.fcm.stats(), token) == 1
    [req] = any_app.stack.fcm.requests(token)
    message = req["body"]["message"]
    assert message["token"] == token
    assert message["notification"] == {"title": "Hi", "body": "there"}
    # Non-string values travel as their JSON text (SEED-NOTES 30).
    assert message["data"] == {"n": "7", "flag": "true", "s": "x", "notificationId": d.id}


def test_push_to_a_user_with_three_devices_makes_three_deliveries(app: AppHandle) -> None:
    tokens = {app.ios("carol"), app.ios("carol"), app.android("carol")}
    app.ios("somebody-else")
    st = app.push_users("carol")
    assert (st.total, st.by_status) == (3, {"SENT": 3})
    apns, fcm = app.stack.apns.stats(), app.stack.fcm.stats()
    assert {t for t in tokens if accepted(apns, t) + accepted(fcm, t) == 1} == tokens


def test_apns_unregistered_gives_code_7_and_the_registration_is_never_sent_to_again(
    any_app: AppHandle,
) -> None:
    token = any_app.ios("dave")
    any_app.stack.apns.script(token=token, then="Unregistered")
    st = any_app.push_users("dave")
    assert (st.by_status, st.by_code) == ({"ERROR": 1}, {"7": 1})
    reg = any_app.client.registration(any_app.registration_for(token, "dave"))
    assert (reg.active, reg.deactivated_code) == (False, 7)
    again = any_app.push_users("dave")
    assert (again.state, again.code, again.total) == ("failed", 2, 0)
    assert any_app.stack.apns.stats()["rejected"].get("Unregistered", 0) >= 1
    assert len(any_app.stack.apns.requests(token)) == 1  # the provider saw it exactly once


def test_fcm_unregistered_gives_code_7_and_deactivates(app: AppHandle) -> None:
    token = app.android("erin")
    app.stack.fcm.script(token=token, then="UNREGISTERED")
    st = app.push_users("erin")
    assert st.by_code == {"7": 1}
    assert app.client.registration(app.registration_for(token, "erin")).active is False


def test_bad_device_token_gives_code_6_and_deactivates(app: AppHandle) -> None:
    token = app.ios("frank")
    app.stack.apns.script(token=token, then="BadDeviceToken")
    st = app.push_users("frank")
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.code) == ("ERROR", 6)
    assert d.provider_message == "The payload was rejected by APNs: BadDeviceToken"
    assert app.client.registration(app.registration_for(token, "frank")).deactivated_code == 6


def test_provider_413_gives_code_9(app: AppHandle) -> None:
    token = app.ios("gina")
    app.stack.apns.script(token=token, then="PayloadTooLarge")
    st = app.push_users("gina")
    assert st.by_code == {"9": 1}


def test_payload_too_large_for_apns_is_code_9_without_a_wasted_request(app: AppHandle) -> None:
    token = app.ios("hank")
    # Within the API's character limits, but over APNs' 4096 bytes once encoded (é is 2 bytes).
    st = app.push_users("hank", alert={"body": "é" * 2040}, data={"pad": "x" * 1900})
    assert st.by_code == {"9": 1}
    assert app.stack.apns.requests(token) == []


def test_503_then_success_is_sent_after_a_retry(any_app: AppHandle) -> None:
    token = any_app.ios("ivan")
    any_app.stack.apns.script(token=token, responses=["ServiceUnavailable"])
    st = any_app.push_users("ivan")
    [d] = any_app.client.deliveries(st.id).items
    assert (d.status, d.code, d.attempts) == ("SENT", 0, 2)
    outcomes = [r["outcome"] for r in any_app.stack.apns.requests(token)]
    assert outcomes == ["ServiceUnavailable", "accepted"]


def test_fcm_unavailable_twice_then_success_is_sent_on_the_third_attempt(app: AppHandle) -> None:
    token = app.android("judy")
    app.stack.fcm.script(token=token, responses=["UNAVAILABLE", "INTERNAL"])
    st = app.push_users("judy")
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.attempts) == ("SENT", 3)


def test_retries_that_never_succeed_end_in_error_12_after_the_attempt_limit(app: AppHandle) -> None:
    token = app.ios("kate")
    app.stack.apns.script(token=token, then="ServiceUnavailable")
    st = app.push_users("kate")
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.code, d.attempts) == ("ERROR", 12, 5)
    assert len(app.stack.apns.requests(token)) == 5


def test_broadcast_reaches_every_active_device_of_the_app_only(app: AppHandle) -> None:
    mine = [app.ios(f"u{i}") for i in range(6)] + [app.android(f"v{i}") for i in range(6)]
    dead = app.ios("dead")
    app.stack.apns.script(token=dead, then="Unregistered")
    app.push_users("dead")
    st = app.wait(
        app.client.push({"target": {"type": "application"}, "payload": {"alert": "to all"}}).id
    )
    assert (st.total, st.by_status) == (12, {"SENT": 12})
    apns, fcm = app.stack.apns.stats(), app.stack.fcm.stats()
    assert all(accepted(apns, t) + accepted(fcm, t) == 1 for t in mine)


def test_push_to_one_registration_by_id(app: AppHandle) -> None:
    token = app.ios("liz")
    reg_id = app.registration_for(token, "liz")
    st = app.wait(
        app.client.push(
            {
                "target": {"type": "device", "registration_id": reg_id},
                "payload": {"alert": "only you"},
            }
        ).id
    )
    assert st.by_code == {"0": 1}


def test_a_target_that_matches_nothing_ends_the_message_with_code_2(app: AppHandle) -> None:
    st = app.push_users("nobody-has-this-name")
    assert (st.state, st.code, st.total) == ("failed", 2, 0)
    assert st.detail == "no active registration matched the target"


def test_deactivation_is_stored_in_the_database(app: AppHandle) -> None:
    token = app.ios("mia")
    app.stack.apns.script(token=token, then="Unregistered")
    app.push_users("mia")
    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        reg = s.get(Registration, app.registration_for(token, "mia"))
        assert reg is not None and reg.deactivated_at is not None and reg.active is False
