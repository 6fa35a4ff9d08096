"""How work leaves Pushline: Celery tasks, targeting, payloads, the APNs, FCM, Web Push and
Huawei Push Kit senders."""

from schemas import metricsdir

# Before anything here imports prometheus-client: a worker's prefork children (forked
# after this) add their counts up in one directory that the parent serves.
metricsdir.prepare("worker")
