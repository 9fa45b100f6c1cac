"""Errors a user can cause. The CLIs turn them into one line and exit status 2."""
from __future__ import annotations

import functools
import logging
import os
import sys


class UserError(Exception):
    """A mistake of the user (bad flag, missing data, unwritable folder): no traceback."""


def unknown_method(name: str, known, plugins_given: bool = False) -> str:
    """The line for a method name nobody registers: the known ones, the closest of them (a typo), and
    where a plugin's method comes from."""
    import difflib  # noqa: PLC0415

    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    text = f"unknown method {name!r}; known methods: {', '.join(known)}"
    if close:
        text += f"; did you mean {close[0]}?"
    if not plugins_given:
        text += " (a plugin's method: load its plugin with --plugin MODULE|FILE.py)"
    return text


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
