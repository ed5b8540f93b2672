"""Durable cache storage: verified content by digest, and per-repository indexes."""
