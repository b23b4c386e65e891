"""Staging: app source and buildpacks in, a droplet out, all inside an unprivileged container."""
