"""fence's benchmarks: each figure measured beside its raw-Docker baseline in the same run (`make bench`)."""
