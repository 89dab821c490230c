"""MMDetection glue: the only sub-package that imports mmdet."""
