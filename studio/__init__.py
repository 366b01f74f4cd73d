"""UI-free core of the studio: client, models, tracker, store, images, simulator.

Nothing in this package imports streamlit.
"""

from .errors import HiAPIError
from .models import Task, TaskRequest, TaskStatus
from .ratios import RATIO_NAMES, RATIOS, RESOLUTIONS, pixel_size
from .validation import Problem, validate_request

__all__ = [
    "HiAPIError",
    "Problem",
    "RATIOS",
    "RATIO_NAMES",
    "RESOLUTIONS",
    "Task",
    "TaskRequest",
    "TaskStatus",
    "pixel_size",
    "validate_request",
]
