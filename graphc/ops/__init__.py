"""All op functions. Each module registers its ops in :mod:`.registry` and
lists its public functions in ``__all__``."""
from . import registry
from .core import *          # noqa: F401,F403
from .elementwise import *   # noqa: F401,F403
from .reduce import *        # noqa: F401,F403
from .shape import *         # noqa: F401,F403
from .indexing import *      # noqa: F401,F403
from .linalg import *        # noqa: F401,F403
from .state import *         # noqa: F401,F403
from .control_flow import *  # noqa: F401,F403
from .random import *        # noqa: F401,F403
from .grad_support import *  # noqa: F401,F403
from . import nn             # noqa: F401
