"""The package's own exceptions.  Every failure a user can cause through a file, a download or an
argument is one of these: a ValueError or OSError subclass (so existing ``except ValueError``
code keeps working) whose message names the file, layer or argument and what to do."""
import argparse
import math
import numbers

import numpy as np


class Error(Exception):
    """Base of every mobilenetv2 exception."""


class WeightsError(Error, ValueError):
    """A weights file that cannot be read safely, or does not fit the model."""


class DownloadError(Error, OSError):
    """A weights download that failed or delivered the wrong bytes (nothing is left behind)."""


class ImageError(Error, ValueError):
    """An image file that is not one of the documented formats, or is damaged or too large."""


class ArgumentError(Error, ValueError):
    """An argument outside what the model, the machine or the command can take."""


class InsufficientMemory(Error, MemoryError):
    """A call whose buffers this machine cannot hold (a batch too large): the message says how
    much it needs and what to do."""


class OutputPathError(Error, OSError):
    """An output path the package will not write to (empty, a folder, or a folder's name)."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr (no usage block), exit status 2: the
    command line's failures look like every other failure of the package.  What argparse quotes
    of the command line unquoted ("unrecognized arguments: ...", "ambiguous option: ...") is
    written with its control characters escaped: a word holding a newline made it two lines."""

    def error(self, message):
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(limit=None):
    """An argparse ``type``: a whole number from 1 (to ``limit`` where given), else the parser's
    one-line error saying so (argparse's own would read "invalid parse value")."""
    return whole_number(1, limit)


def whole_number(low, high=None):
    """An argparse ``type``: a whole number from ``low`` (to ``high`` where given), else the
    parser's one-line error saying so."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            upto = f" to {high}" if high is not None else " up"
            raise argparse.ArgumentTypeError(f"must be a whole number from {low}{upto}, got {value}")
        return value
    return parse


def is_whole(value):
    """A whole number: Python's or NumPy's integer, or a 0-d integer array such as ``np.array(2)``
    (what operator.index takes), not a bool (True is not a count).  Callers go on with
    ``int(value)``, not the value itself."""
    if type(value) is int:  # the usual case, before the slower checks (predict's batch_size, per call)
        return True
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "iu"
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def flag(value):
    """The bool a flag holds: Python's or NumPy's bool, a 0-d bool array such as ``np.array(True)``,
    or a whole number 0 or 1 (Keras's ``if include_top:`` takes them); None for anything else (2,
    0.5, "yes", None, a 1-d array)."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind == "b":
        value = value[()]  # (its np.bool_)
    if isinstance(value, (bool, np.bool_)) or (is_whole(value) and value in (0, 1)):
        return bool(value)
    return None


def is_items(value):
    """Items to go through (a list, tuple, generator, an array of one or more dimensions): not a
    string (str or bytes: not a list of names or numbers) and not a 0-d array, whose __iter__ and
    __len__ exist and raise TypeError."""
    return (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))
            and not (isinstance(value, np.ndarray) and value.ndim == 0))


def real(value):
    """The float a real number holds: Python's or NumPy's int or float, or a 0-d array of one such
    as ``np.array(0.5)`` (what is_whole takes for counts); None for anything else, a bool or bool
    array among them (True is not a number).  An int too large for a float is +-inf, which the
    callers' range checks refuse as they refuse NaN."""
    if isinstance(value, np.ndarray):
        if value.ndim != 0 or value.dtype.kind not in "iuf":
            return None
    elif not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def is_finite(value):
    """A finite real number (see real): NaN, the infinities and an int past float's range are not."""
    number = real(value)
    return number is not None and math.isfinite(number)


def a_or_an(noun):
    """``noun`` after the indefinite article its sound takes: "an ONNX file", "an OpenVINO IR", "an
    HDF5 file", "an 8-vector", "an int", but "a TFLite file", "a .tflite file", "a URL", "a unit".
    A word in capitals is read letter by letter (H is "aitch"); a number by its first digits."""
    word = noun.split()[0] if noun.strip() else noun
    digits = len(word) - len(word.lstrip("0123456789"))
    if digits:  # "an 8", "an 80", "an 11", "an 18000" (eighteen thousand), "a 1100"
        vowel = word[0] == "8" or (word[:2] in ("11", "18") and digits % 3 == 2)
    elif word[:2].isupper():  # a name spelt letter by letter: "an HDF5", "an MNV2", "a TFLite"
        vowel = word[0] in "AEFHILMNORSX"
    else:  # "a unit", "a user", "a one-line", as they sound
        vowel = word[:1].lower() in ("a", "e", "i", "o", "u") and not word.lower().startswith(("uni", "use", "usu", "uti", "one"))
    return f"{'an' if vowel else 'a'} {noun}"


def check_option(value, choices, message):
    """``value`` if it is one of ``choices`` (strings or None), else an ArgumentError ``message``
    with the value: the test is on the type first, as ``an_array in ("avg", "max")`` raises
    NumPy's own ValueError instead of answering."""
    if (value is None or isinstance(value, str)) and value in choices:
        return value
    raise ArgumentError(f"{message}, got {value!r}")


def as_array(value, what):
    """``np.asarray(value)``, or an ArgumentError naming ``what`` where NumPy cannot make one array
    of it (a list of images of different sizes is NumPy's own ValueError)."""
    try:
        return np.asarray(value)
    except ValueError as exc:
        raise ArgumentError(f"{what} must be one array (a list of arrays must share one shape): {exc}") from None
