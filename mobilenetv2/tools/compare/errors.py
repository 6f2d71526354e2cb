"""The exceptions of ``compare``: bad input (exit 2 on the command line) vs a missing extra."""
from mobilenetv2.errors import Error


class CompareError(Error, ValueError):
    """OTHER, the weights, the mapping or the input cannot be used; the message says what to do."""


class MissingExtra(CompareError, ImportError):
    """An optional framework is not installed; the message names the pip extra that brings it."""

    def __init__(self, what, module, extra):
        super().__init__(f"{what} needs the {module!r} package, which is not installed: "
                         f'pip install "mobilenetv2[{extra}]"')


def require(module, what, extra):
    """Import ``module`` or raise MissingExtra naming the extra."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(what, module.split(".")[0], extra) from None
