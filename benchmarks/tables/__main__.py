"""python -m benchmarks.tables"""
from benchmarks.tables.cli import main

main()
