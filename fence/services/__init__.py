"""Backing services (PostgreSQL, MySQL/MariaDB, Redis): images, lifecycle, credentials, backups."""
