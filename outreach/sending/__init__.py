"""Sending: the sweeper claims due steps; each is re-checked against the EHR and our records,
reserved, sent once through a channel, and recorded for write-back."""
