"""lambdaexec's version, its one source: ``lambdaexec.__version__``, ``lambdaexec --version`` and
the installed distribution's metadata (setup.cfg: ``version = attr: lambdaexec.version.__version__``)
all read it. A module of its own, importing nothing, so that each of them can."""

#: this lambdaexec's version
__version__ = "0.1.0"
