"""``POST /tasks`` (the guide's task execution, chained with ``previous_task_id``) and
``GET /tasks/{id}``."""

from __future__ import annotations

from fastapi import APIRouter

from ..protocol import TaskRequest, TaskResponse
from .deps import Caller, Convos, JsonBody, TaskId

router = APIRouter(tags=["tasks"])


@router.post("/tasks", response_model=TaskResponse, dependencies=[JsonBody])
async def create_task(body: TaskRequest, caller: Caller, convos: Convos) -> TaskResponse:
    """The guide's task execution; chain tasks with ``previous_task_id``."""
    return await convos.run_task(caller, body)


@router.get("/tasks/{task_id}", response_model=TaskResponse)
async def get_task(task_id: TaskId, caller: Caller, convos: Convos) -> TaskResponse:
    return await convos.get_task(caller, task_id)
