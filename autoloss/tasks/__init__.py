"""Cheap, real proxy tasks on which candidate losses are trained and scored."""
