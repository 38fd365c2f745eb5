"""The Postgres loader (also the base of the Redshift loader)."""
