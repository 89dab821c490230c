"""The tracking proxy: GOT-10k-layout data, a DiMP-style Siamese tracker, OPE and the GOT-10k metrics."""
