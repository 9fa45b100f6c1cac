"""The paper's reported numbers, as data (clip_lung_miccai2023.json): read by benchmarks.tables."""
