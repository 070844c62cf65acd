from cfimg.cli import main

main()
