from spgs.cli import main; main()
