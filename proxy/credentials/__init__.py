"""Credential kinds and the minting of short-lived registry passwords (ECR, GCR)."""
