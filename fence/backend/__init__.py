"""Container backends: the contract (base), the Docker Engine one, and an in-memory fake."""
