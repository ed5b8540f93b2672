"""Fixtures every test directory may use: the real engines the shared-storage tests run against."""

from .pgserver import pg_url, postgres  # noqa: F401 - fixtures, found here by pytest
from .s3server import s3  # noqa: F401 - a fixture, found here by pytest
