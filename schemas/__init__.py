"""The shared language of Pushline: enums, tables, request/response models, settings.

Both `producer` and `worker` import this package; it imports neither.
"""
