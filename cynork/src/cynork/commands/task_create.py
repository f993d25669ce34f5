"""`cynork task create`: one task from a prompt, a script or a list of commands."""

from __future__ import annotations

from typing import Any

import click

from cynork._app import get_app, output_option
from cynork._errors import GatewayError, UsageError
from cynork._files import (
    COMMANDS_LIMIT,
    PROMPT_LIMIT,
    SCRIPT_LIMIT,
    check_text_limit,
    read_attachments,
    read_commands_file,
    read_text_checked,
)
from cynork._waiting import wait_for_result

CREATED_KEYS = ("task_id", "task_name", "status", "attachments")
MODES_HINT = "give a prompt (-p/-t/-f), a script (-s) or commands (--command/--commands-file)"


def build_body(
    *,
    prompt: str | None,
    task: str | None,
    task_file: str | None,
    script: str | None,
    commands: tuple[str, ...],
    commands_file: str | None,
    name: str | None,
    use_inference: bool,
    attach: tuple[str, ...],
    timeout: int | None,
    image: str | None,
) -> dict[str, Any]:
    """The CreateTask JSON body; every file is read and checked here, before any request."""
    prompt_sources = [s for s in (prompt, task, task_file) if s is not None]
    modes = sum(
        (
            bool(prompt_sources),
            script is not None,
            bool(commands) or commands_file is not None,
        )
    )
    if len(prompt_sources) > 1:
        raise UsageError("-p/--prompt, -t/--task and -f/--task-file are one input; give one")
    if modes == 0:
        raise UsageError(f"nothing to run: {MODES_HINT}")
    if modes > 1:
        raise UsageError(f"one input mode per task: {MODES_HINT}, not several")
    body: dict[str, Any] = {}
    if task_file is not None:
        body.update(
            input_mode="prompt",
            prompt=read_text_checked(task_file, what="prompt", limit=PROMPT_LIMIT),
        )
    elif prompt_sources:
        body.update(input_mode="prompt", prompt=prompt_sources[0])
    elif script is not None:
        body.update(
            input_mode="script", script=read_text_checked(script, what="script", limit=SCRIPT_LIMIT)
        )
    else:
        lines = read_commands_file(commands_file) if commands_file is not None else []
        body.update(input_mode="commands", commands=[*lines, *commands])
    if body["input_mode"] == "prompt":
        if not body["prompt"].strip():
            raise UsageError("the prompt is empty")
        check_text_limit(body["prompt"], what="the prompt", limit=PROMPT_LIMIT)
    if body["input_mode"] == "script" and not body["script"].strip():
        raise UsageError(f"script file {script} is empty")
    if body["input_mode"] == "commands":
        if not body["commands"]:
            raise UsageError("no commands given (the commands file holds none)")
        check_text_limit("".join(body["commands"]), what="the commands", limit=COMMANDS_LIMIT)
    if attach:
        body["attachments"] = [a.to_json() for a in read_attachments(attach)]
    if name:
        body["task_name"] = name
    if use_inference:
        body["use_inference"] = True
    if timeout is not None:
        body["timeout_seconds"] = timeout
    if image:
        body["image"] = image
    return body


@click.command("create")
@click.option("-p", "--prompt", default=None, help="Prompt text (interpreted with inference).")
@click.option("-t", "--task", default=None, help="Same as --prompt.")
@click.option("-f", "--task-file", default=None, metavar="FILE", help="Read the prompt from FILE.")
@click.option("-s", "--script", default=None, metavar="FILE", help="Run the script in FILE.")
@click.option(
    "--command",
    "commands",
    multiple=True,
    metavar="CMD",
    help="A command to run; repeat for several, run in order.",
)
@click.option(
    "--commands-file", default=None, metavar="FILE", help="Commands to run, one per line."
)
@click.option("--name", default=None, help="Task name (unique per user; -2, -3… on a clash).")
@click.option("--use-inference", is_flag=True, help="Give a script or commands the model proxy.")
@click.option(
    "-a",
    "--attach",
    multiple=True,
    metavar="PATH",
    help="File placed under /workspace by its base name, listed by its relative path; "
    "repeatable (at most 16, 10 MiB each).",
)
@click.option(
    "--timeout", type=click.IntRange(min=1), default=None, metavar="SECONDS", help="Job timeout."
)
@click.option("--image", default=None, help="Sandbox image to run in.")
@click.option("--result", "wait", is_flag=True, help="Wait for the task and print its result.")
@output_option
def command(
    prompt: str | None,
    task: str | None,
    task_file: str | None,
    script: str | None,
    commands: tuple[str, ...],
    commands_file: str | None,
    name: str | None,
    use_inference: bool,
    attach: tuple[str, ...],
    timeout: int | None,
    image: str | None,
    wait: bool,
) -> None:
    """Create a task; prints task_id=… (and task_name=…)."""
    app = get_app()
    body = build_body(
        prompt=prompt,
        task=task,
        task_file=task_file,
        script=script,
        commands=commands,
        commands_file=commands_file,
        name=name,
        use_inference=use_inference,
        attach=attach,
        timeout=timeout,
        image=image,
    )
    created = app.client().create_task(body)
    if not wait:
        app.output.obj(created, CREATED_KEYS)
        return
    if not app.output.is_json:
        app.output.obj(created, CREATED_KEYS)
    task_id = str(created.get("task_id") or "")
    if not task_id:
        raise GatewayError("the gateway did not return a task_id to wait for")
    app.output.result(wait_for_result(app, task_id))
