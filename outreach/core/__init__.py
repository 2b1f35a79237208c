"""The small core every stage may use: settings, the clock, the ports (EHR client, enqueuer,
runtime), backoff, metrics and the journey set. It imports no stage."""
