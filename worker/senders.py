"""Per-process cache of provider senders, one per (app, provider), rebuilt when the app changes."""

from __future__ import annotations

import ssl

import jwt

from schemas.settings import Settings
from schemas.tables import App
from worker.apns import ApnsSender
from worker.fcm import FcmSender
from worker.hms import HmsSender
from worker.webpush import WebPushSender

_apns: dict[str, tuple[object, ApnsSender]] = {}
_fcm: dict[str, tuple[object, FcmSender]] = {}
_webpush: dict[str, tuple[object, WebPushSender]] = {}
_hms: dict[str, tuple[object, HmsSender]] = {}


class MissingCredentials(Exception):
    pass


def apns_sender(app: App, settings: Settings) -> ApnsSender:
    """Must be called on the process loop: aioapns binds its pool to the running loop."""
    hit = _apns.get(app.id)
    if hit is not None and hit[0] == app.updated_at:
        return hit[1]
    if not (app.apns_cert_pem or app.apns_key_pem):
        raise MissingCredentials("the app has no APNs credentials")
    if hit is not None:
        hit[1].close()
    try:
        sender = ApnsSender(app, settings)
    except (ValueError, TypeError, ssl.SSLError, jwt.PyJWTError) as exc:
        # A key that cannot sign a token (or a certificate that does not load) is a
        # configuration problem (code 4), not a crash of the chunk.
        raise MissingCredentials(f"the app's APNs credentials do not load: {exc}") from exc
    _apns[app.id] = (app.updated_at, sender)
    return sender


def fcm_sender(app: App, settings: Settings) -> FcmSender:
    """Must be called on the process loop: the sender's HTTP/2 connection lives there."""
    hit = _fcm.get(app.id)
    if hit is not None and hit[0] == app.updated_at:
        return hit[1]
    if not app.fcm_service_account:
        raise MissingCredentials("the app has no FCM service account")
    if hit is not None:
        hit[1].close()  # the app changed: its old connection and token go with the old sender
    sender = FcmSender(app, settings)
    _fcm[app.id] = (app.updated_at, sender)
    return sender


def webpush_sender(app: App, settings: Settings) -> WebPushSender:
    """Must be called on the process loop: the sender's HTTP connections live there."""
    hit = _webpush.get(app.id)
    if hit is not None and hit[0] == app.updated_at:
        return hit[1]
    if not (app.webpush_private_key_pem and app.webpush_subject):
        raise MissingCredentials("the app has no Web Push (VAPID) credentials")
    if hit is not None:
        hit[1].close()
    try:
        sender = WebPushSender(app, settings)
    except ValueError as exc:
        raise MissingCredentials(f"the app's VAPID key does not load: {exc}") from exc
    _webpush[app.id] = (app.updated_at, sender)
    return sender


def hms_sender(app: App, settings: Settings) -> HmsSender:
    """Must be called on the process loop: the sender's HTTP connections live there."""
    hit = _hms.get(app.id)
    if hit is not None and hit[0] == app.updated_at:
        return hit[1]
    if not (app.hms_app_id and app.hms_client_secret):
        raise MissingCredentials("the app has no Huawei Push Kit app id and client secret")
    if hit is not None:
        hit[1].close()  # the app changed: its old connections and token go with the old sender
    sender = HmsSender(app, settings)
    _hms[app.id] = (app.updated_at, sender)
    return sender
