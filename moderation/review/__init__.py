"""Reviewer spot-checks: sampling (sample.py), the case-check store (db.py, store.py), the review
web app (app.py, templates/, static/), dashboard figures (dashboard.py) and interop (interop.py).

Nothing heavy is imported here: FastAPI, psycopg and datasets load inside the functions that use them.
"""
