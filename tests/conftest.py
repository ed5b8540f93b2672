"""Fixtures every test directory may use: the real engines the shared-storage tests run against."""

from .s3server import s3  # noqa: F401 - a fixture, found here by pytest
