"""How work leaves Pushline: Celery tasks, targeting, payloads, APNs and FCM senders."""
