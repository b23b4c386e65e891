"""The stack: the one base image every container starts from; resolving it and building it."""
