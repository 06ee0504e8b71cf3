"""One module per CLI verb: ``HELP``, ``add_arguments(parser)``, ``run(args) -> int``.

Verb modules parse arguments and call the public API; they hold no numerical logic.
"""
