"""`cynork task artifacts list|get`: the files a task's job left in /workspace/out/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cynork._app import get_app, output_option, task_id_argument
from cynork._errors import NotFoundError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

HEADER = ("artifact_id", "name", "content_type", "size_bytes")


@click.group("artifacts", context_settings={"help_option_names": ["-h", "--help"]})
def group() -> None:
    """List and download the files a task's job left in /workspace/out/."""


# How long `get` waits, by default, for a set still being uploaded (a task that just
# ended): the gateway wakes the wait when the last file is stored.
GET_WAIT_SECONDS = 60.0


def wait_option(default: float, help_text: str) -> Callable[[F], F]:
    return click.option(
        "-w",
        "--wait",
        "wait",
        type=click.FloatRange(min=0),
        default=default,
        show_default=True,
        metavar="SECONDS",
        help=help_text,
    )


@group.command("list")
@task_id_argument
@wait_option(0.0, "Wait up to SECONDS for the set to be complete (the gateway wakes it).")
@output_option
def list_command(task_id: str, wait: float) -> None:
    """One line per artifact: id, name, content type, size (tab-separated)."""
    app = get_app()
    body = app.client().list_artifacts(task_id, wait=wait)
    if app.output.is_json:
        app.output.json_line({"task_id": body.get("task_id", task_id), **body})
        return
    click.echo("\t".join(HEADER))
    for item in body["artifacts"]:
        click.echo("\t".join(str(item.get(key, "")) for key in HEADER))
    if not body.get("complete", False):
        app.output.note("the artifacts are not complete yet (the job runs or is uploading)")
    if body.get("truncated"):
        app.output.warn(f"the set was cut short: {body.get('truncated_reason', '')}")


@group.command("get")
@task_id_argument
@click.argument("artifact_id", required=False)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="File to write (with --all: a directory).",
)
@click.option("--all", "all_", is_flag=True, help="Every artifact, under --out by its name.")
@click.option("--force", is_flag=True, help="Replace files that exist.")
@wait_option(GET_WAIT_SECONDS, "Wait up to SECONDS for the set to be complete first; 0: not.")
@output_option
def get_command(
    task_id: str, artifact_id: str | None, out: Path, all_: bool, force: bool, wait: float
) -> None:
    """Download ARTIFACT_ID to --out (or, with --all, the whole set into --out)."""
    # Here, not at the top: the download code loads the HTTP client, and listing this command
    # (help, completion) should not (docs/fast-path.md §7).
    from cynork._download import check_target, local_name, save

    if all_ == (artifact_id is not None):
        raise UsageError("give either ARTIFACT_ID or --all")
    app = get_app()
    client = app.client()
    listed = client.list_artifacts(task_id, wait=wait)
    artifacts = listed["artifacts"]
    progress = app.stderr_is_tty() and not app.output.quiet and app.output.color
    if not all_:
        wanted = [
            a
            for a in artifacts
            if str(a.get("artifact_id", "")).upper() == str(artifact_id).upper()
        ]
        if not wanted:
            raise NotFoundError(f"task {task_id} has no artifact {artifact_id}")
        check_target(out, force)
        path = save(client, task_id, wanted[0], out, progress=progress)
        app.output.obj({"saved": True, "path": str(path)})
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is not a directory; with --all, --out names one")
    targets = [(a, out / local_name(str(a.get("name", "")))) for a in artifacts]
    for _, target in targets:
        check_target(target, force)
    saved = [str(save(client, task_id, a, target, progress=progress)) for a, target in targets]
    if app.output.is_json:
        app.output.json_line({"saved": True, "path": str(out), "count": len(saved), "files": saved})
        return
    app.output.obj({"saved": True, "path": str(out), "count": len(saved)})
