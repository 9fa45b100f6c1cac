"""python -m benchmarks.figures"""
from benchmarks.figures.cli import main

main()
