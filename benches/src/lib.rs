//! The load generator and micro-benchmarks arrive with the benchmarks issue.
