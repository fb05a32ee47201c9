"""``python -m optin.config``: print the README's Configuration table."""

from optin.config.table import markdown_table

print(markdown_table())
