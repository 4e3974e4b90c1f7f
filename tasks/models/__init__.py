"""Model architectures, augmentation, pruning recipes and the exporter of each format."""
