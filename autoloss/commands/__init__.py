"""The subcommands of ``autoloss``, one module each: ``add_parser(subparsers)`` and a handler."""
