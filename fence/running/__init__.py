"""Running droplets: start scripts, health checks, restart backoff, and the instance reconciler."""
