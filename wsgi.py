"""WSGI entry point for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Configuration comes from the ``OPTIN_*`` environment (see README).
"""

from optin import create_app

app = create_app()
