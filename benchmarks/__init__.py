"""`make bench`: throughput, latency and memory of the bridge, measured on this machine."""
