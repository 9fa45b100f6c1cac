"""Errors a user can cause. The CLIs turn them into one line and exit status 2."""
from __future__ import annotations

import functools
import logging
import os
import sys


class UserError(Exception):
    """A mistake of the user (bad flag, missing data, unwritable folder): no traceback."""


def setup_logging() -> None:
    """Our loggers at INFO; third-party libraries (open_clip logs on the root logger) at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("benchmarks", "methods", "clip_lung"):
        logging.getLogger(name).setLevel(logging.INFO)


def cli_main(fn):
    """Wrap a CLI ``main``: a :class:`UserError` prints one line and exits with status 2."""

    @functools.wraps(fn)
    def wrapper(argv=None):
        setup_logging()
        try:
            return fn(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except BrokenPipeError:  # output piped into `head`: not an error
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
            raise SystemExit(0) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
