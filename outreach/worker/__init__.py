"""The worker: Celery tasks (by name) and the jobs they run, which hand one stage's findings to
the next."""
