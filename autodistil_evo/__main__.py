from autodistil_evo.cli import main

main()
