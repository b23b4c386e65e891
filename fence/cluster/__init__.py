"""The cluster: fence as the controller of a Docker Swarm (the registry, forming and joining)."""
