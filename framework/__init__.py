"""flashsim framework: a batched, columnar, Gaudi-style event-loop framework (no physics here)."""
__version__ = "0.1.0"

from .algorithm import Algorithm, Filter  # noqa: E402
from .collection import Collection  # noqa: E402
from .component import Input, InputList, Output, Property  # noqa: E402
from .errors import ConfigurationError, EventError, FlashsimError, InputError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402

__all__ = ["Algorithm", "Filter", "Collection", "Property", "Input", "InputList", "Output", "ConfigurationError",
           "EventError", "FlashsimError", "InputError", "hookimpl", "__version__"]
