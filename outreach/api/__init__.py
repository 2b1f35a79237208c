"""The FastAPI app: rest-hook receiver, health and metrics (admin API and SMART view to come)."""
