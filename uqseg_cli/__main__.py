from uqseg_cli.cli.app import main

main()
