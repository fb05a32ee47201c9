"""Benchmarks: how close optin runs to the limits of its own stack (``python -m bench``).

Each scenario starts what it needs on this machine (PostgreSQL databases named
``optin_bench_*``, the service under gunicorn with its production settings, an
SMTP sink, an ActiveCampaign stand-in), measures a baseline that does only what
the stack must do in the same run, and reports the ratio. See README
"Benchmarks". Nothing here is a unit test.
"""
