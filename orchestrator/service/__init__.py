"""The service behind `mathrl up`: the FastAPI app (`api/`, `static/` dashboard), the SQLite
run store, the scheduler that steps one run at a time, and the settings.

May import `orchestrator.run` (the run itself) but never `orchestrator.cli`; the store knows
nothing of the API's wire schemas: `api/records.py` maps its records to responses.
"""
