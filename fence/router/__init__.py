"""The node's router: an nginx that fence configures, checks and reloads from the desired routes."""
