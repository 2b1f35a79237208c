"""The Celery app and its tasks: sweeping due steps, sending them, writing back, polling."""
