"""The benchmark harness behind `decode bench` and the scripts in benchmarks/: ms/step
against the reference `generate`, the matmul floor and the bandwidth roofline."""
