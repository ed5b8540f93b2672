"""Durable state: registry credentials and settings, in SQLite, secrets encrypted."""
