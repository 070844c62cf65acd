"""cfimg: tell genuine from counterfeit luxury goods in product photos."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cfimg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
