"""`make bench`: the throughput and latency figures the README reports (not timed tests)."""
