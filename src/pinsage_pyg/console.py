r"""What the command-line tools print: each message once, and progress
that suits where the output goes (a terminal or a log file)."""
from __future__ import annotations

import logging
import sys
from typing import Optional, Union

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


#: The values of a ``progress`` setting: ``auto`` (a bar on a terminal,
#: log lines otherwise), ``bar``, ``log`` or ``none``.
PROGRESS_MODES = ('auto', 'bar', 'log', 'none')


def progress_mode(progress: Union[bool, str, None]) -> Optional[str]:
    r"""What a ``progress`` setting shows here: ``'bar'`` (a progress bar
    with carriage returns), ``'log'`` (log lines) or :obj:`None` (nothing).

    ``'auto'`` (and :obj:`True`) is a bar when stdout is a terminal and log
    lines when it is a file or pipe; :obj:`False`, :obj:`None` and
    ``'none'`` show nothing."""
    if progress is None or progress is False or progress == 'none':
        return None
    if progress is True or progress == 'auto':
        return 'bar' if interactive() else 'log'
    if progress in ('bar', 'log'):
        return progress
    raise ValueError(f"progress must be one of {list(PROGRESS_MODES)} or a "
                     f"bool (got {progress!r})")
