"""Detection datasets: a synthetic COCO generator, and reading and validating a user's COCO directory."""
