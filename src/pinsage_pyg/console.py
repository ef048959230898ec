r"""What the command-line tools print: each message once, and progress
that suits where the output goes (a terminal or a log file)."""
from __future__ import annotations

import logging
import sys

log = logging.getLogger('pinsage_pyg')


def report_error(message: str) -> None:
    r"""Prints ``error: <message>`` once, on stderr (the console handler of
    Hydra's logging writes to stdout, so logging it as well printed every
    error twice), and records it in the log files of the root logger (a
    ``pinsage-train`` run's ``cli.log``)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, '%s',
                            (message, ), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    print(f"error: {message}", file=sys.stderr, flush=True)


def single_console_logging() -> None:
    r"""Lets Lightning's log lines through the root logger's handlers only.

    ``import lightning`` adds a stderr handler to the ``lightning`` logger,
    which also propagates to the root logger (Hydra's console handler on
    stdout), so each of its lines appeared twice. When the root logger has
    handlers, that extra handler is removed."""
    if not logging.getLogger().handlers:
        return
    for name in ('lightning', 'lightning.pytorch', 'lightning.fabric'):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


def interactive() -> bool:
    r"""Whether stdout is a terminal (progress bars) rather than a file or
    pipe (one log line per epoch instead)."""
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False
