"""Replies: a patient's inbound message understood, acted on and written back."""
