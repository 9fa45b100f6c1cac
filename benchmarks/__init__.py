"""Benchmark suite for lung nodule malignancy prediction on LIDC-IDRI (CLIP-Lung, MICCAI 2023)."""

__version__ = "0.1.0"
