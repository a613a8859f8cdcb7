from hflpipe.pipeline.cli import main

main()
