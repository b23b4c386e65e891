"""Log drains: where an app's (and the node's) log lines are shipped, and the daemon's shipper."""
