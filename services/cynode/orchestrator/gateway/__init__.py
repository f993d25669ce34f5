"""The user gateway's task service: validation, limits, naming, listing, results,
logs and watch."""

from cynode.orchestrator.gateway.servicer import TaskServicer
from cynode.orchestrator.gateway.tasks import TaskBook, TaskNotFound, TaskPage, TaskTerminal
from cynode.orchestrator.gateway.validation import Invalid, NewTask, TooLarge, validate_create

__all__ = [
    "Invalid",
    "NewTask",
    "TaskBook",
    "TaskNotFound",
    "TaskPage",
    "TaskServicer",
    "TaskTerminal",
    "TooLarge",
    "validate_create",
]
