"""Allow ``python -m swiftmail_core.cli``."""

from swiftmail_core.cli import main

main()
