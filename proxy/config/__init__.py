"""The config file and environment, parsed and validated once into frozen objects."""
