"""The content cache behind one async interface (``base.Storage``); the filesystem implementation."""
