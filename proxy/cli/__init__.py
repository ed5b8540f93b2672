"""The command line: ``serve``, ``healthcheck`` and the admin commands, which call the admin API."""
