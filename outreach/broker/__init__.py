"""The message broker: the Celery app's configuration, and the enqueuer that hands ids to
workers by task name (so nothing that enqueues imports the tasks)."""
