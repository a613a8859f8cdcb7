from hflpipe.pipeline.cli.main import main

main()
