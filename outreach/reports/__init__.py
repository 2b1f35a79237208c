"""Outcome reports for managers: what happened after the outreach, from our own records."""
