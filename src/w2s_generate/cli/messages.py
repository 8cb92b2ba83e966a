"""How the command line speaks: its name, one-line messages on stderr, exceptions as one line."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

PROG = "w2s-generate"


def report(message: str) -> None:
    """A message on stderr that does not break a progress bar."""
    from tqdm import tqdm

    tqdm.write(f"{PROG}: {message}", file=sys.stderr)


def reason(error: BaseException) -> str:
    """An exception as one line: our own (ValueError, RuntimeError) by message, others by type too."""
    text = " ".join(str(error).split()) or "(no message)"
    if type(error) in (ValueError, RuntimeError) or type(error).__module__.startswith("w2s_generate"):
        return text
    return f"{type(error).__name__}: {text}"


@contextlib.contextmanager
def library_messages(verbose: bool) -> Iterator[None]:
    """transformers' logs below errors and the libraries' warnings hidden, unless ``verbose``.

    Our own warnings (``W2SWarning``) always show: they are about the user's data or settings.
    """
    if verbose:
        yield
        return
    from transformers.utils import logging as hf_logging

    from .._compat import W2SWarning

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("default", W2SWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
