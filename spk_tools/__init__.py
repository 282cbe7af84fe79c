"""User-facing tools over every layer: the `spk` command line and the benchmarks."""
