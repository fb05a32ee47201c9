"""The signup baseline: a bare Flask app whose handler does one INSERT transaction.

It reads the same JSON or form body and answers like the service (202 JSON or
303), so the difference to optin is everything optin does beyond one write:
validation, the state machine, the ledger, the outbox.

    gunicorn -c gunicorn.conf.py bench.baseline_app:app   (BENCH_DATABASE_URL set)
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from flask import Flask, jsonify, redirect, request

app = Flask(__name__)
# The same engine options the service uses (optin/config.py).
engine = sa.create_engine(os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://"),
                          pool_pre_ping=True)
INSERT = sa.text("INSERT INTO bench_signup (email, list, payload) VALUES (:email, :list, :payload)")
SCHEMA = ("CREATE TABLE IF NOT EXISTS bench_signup (id bigserial PRIMARY KEY, email text NOT NULL, "
          "list text NOT NULL, payload text, created_at timestamptz NOT NULL DEFAULT now())")


@app.post("/v1/subscriptions")
def signup():  # noqa: ANN201
    data = request.get_json(silent=True) if request.is_json else request.form
    with engine.begin() as conn:
        conn.execute(INSERT, {"email": data["email"], "list": data["list"],
                              "payload": request.get_data(as_text=True)})
    if request.is_json:
        return jsonify(status="accepted"), 202
    return redirect("/thanks", 303)


@app.get("/healthz")
def healthz():  # noqa: ANN201
    return {"status": "ok"}
