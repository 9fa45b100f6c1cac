from benchmarks.tune.cli import main

main()
