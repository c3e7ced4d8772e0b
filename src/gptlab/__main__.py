from gptlab.cli.train import main

main()
