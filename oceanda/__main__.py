"""``python -m oceanda``: the console script; Ctrl-C while the CLI module itself loads is one line too."""

try:
    from oceanda.cli import main
except KeyboardInterrupt:
    import sys

    sys.stderr.write("oceanda: interrupted\n")
    raise SystemExit(130) from None

raise SystemExit(main())
