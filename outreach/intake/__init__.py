"""Intake: a resource version from any source (rest-hook, topic notification, polling, a
scheduled campaign's search) becomes at most one processed change, handed to planning."""
