"""`billbridge workflows list|apply|export`: workflows as YAML files, kept in the store.

    billbridge workflows export --output workflows.yaml
    billbridge workflows apply workflows.yaml --dry-run

`apply` validates the whole file first and writes nothing if any workflow is invalid;
it creates or replaces the workflows it names and leaves the others alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from billbridge.cli_common import EXIT_FAILURE, echo_error, friendly_errors, opened_store, table
from billbridge.config import Settings, load_settings
from billbridge.errors import WorkflowValidationError
from billbridge.stripe.endpoint_sync import EndpointWatch, needed_types
from billbridge.workflows.catalog import WorkflowCatalog
from billbridge.workflows.yaml_io import dump_workflows_yaml, load_workflows_yaml

workflows_app = typer.Typer(
    help="List, apply and export workflows.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Change = Literal["created", "updated", "unchanged"]


@workflows_app.command("list")
def list_workflows(
    as_json: Annotated[bool, typer.Option("--json", help="Print the definitions as JSON.")] = False,
) -> None:
    """List every workflow: id, whether enabled, its trigger events and actions."""
    with friendly_errors():
        settings = load_settings()
        with opened_store(settings, seed_workflows=True) as (_, catalog):
            workflows = catalog.all()
    if as_json:
        typer.echo(json.dumps([workflow.to_data() for workflow in workflows], indent=2))
        return
    if not workflows:
        typer.echo("No workflows.")
        return
    rows = [
        [
            workflow.id,
            "yes" if workflow.enabled else "no",
            ", ".join(workflow.trigger.events),
            ", ".join(action.type for action in workflow.actions),
            workflow.name,
        ]
        for workflow in workflows
    ]
    typer.echo(table(["ID", "ENABLED", "TRIGGER", "ACTIONS", "NAME"], rows))


@workflows_app.command("apply")
def apply_workflows(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="A YAML file of workflows."
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and report, change nothing.")
    ] = False,
) -> None:
    """Create or replace the workflows in FILE (all validated first; none written if any
    is invalid). Workflows not in the file are kept."""
    try:
        workflows = load_workflows_yaml(file.read_text(encoding="utf-8"))
    except WorkflowValidationError as exc:
        echo_error(f"{file}: invalid, nothing was applied:")
        for path, message in exc.problems.items():
            echo_error(f"  {path}: {message}")
        raise typer.Exit(EXIT_FAILURE) from None
    except (OSError, UnicodeDecodeError) as exc:
        echo_error(f"error: cannot read {file}: {exc}")
        raise typer.Exit(EXIT_FAILURE) from None
    changes: list[tuple[Change, str]] = []
    with friendly_errors():
        settings = load_settings()
        with opened_store(settings, seed_workflows=True) as (store, catalog):
            for workflow in workflows:
                data = workflow.to_data()
                stored = store.get_workflow(workflow.id)
                change: Change
                if stored is None:
                    change = "created"
                elif stored.definition == data and stored.enabled == workflow.enabled:
                    change = "unchanged"
                else:
                    change = "updated"
                if change != "unchanged" and not dry_run:
                    catalog.save(data)
                changes.append((change, workflow.id))
            endpoint_line = None
            if not dry_run and any(change != "unchanged" for change, _ in changes):
                catalog.invalidate()
                endpoint_line = _endpoint_after_apply(settings, catalog)
    verbs = {"created": "would create", "updated": "would update", "unchanged": "unchanged"}
    for change, workflow_id in changes:
        typer.echo(f"{verbs[change] if dry_run else change:<12}  {workflow_id}")
    counts = {kind: sum(1 for change, _ in changes if change == kind) for kind in verbs}
    summary = f"{counts['created']} created, {counts['updated']} updated, "
    summary += f"{counts['unchanged']} unchanged"
    typer.echo(("Dry run, nothing written: " if dry_run else "Applied: ") + summary + ".")
    if endpoint_line is not None:
        typer.echo(endpoint_line)


def _endpoint_after_apply(settings: Settings, catalog: WorkflowCatalog) -> str | None:
    """The Stripe endpoint against the applied workflows (synced with
    BILLBRIDGE_WEBHOOK_AUTO_SYNC); None without STRIPE_API_KEY."""
    if settings.stripe_api_key is None:
        return None
    watch = EndpointWatch(lambda: settings, lambda: needed_types(catalog.all()))
    check, synced = watch.after_workflows_changed()
    if synced:
        return f"Stripe webhook endpoint synced: {check.summary()}"
    return f"Stripe webhook endpoint: {check.summary()}"


@workflows_app.command("export")
def export_workflows(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="Write to this file, not stdout."),
    ] = None,
) -> None:
    """Print every workflow as YAML (the format `apply` reads)."""
    with friendly_errors():
        settings = load_settings()
        with opened_store(settings, seed_workflows=True) as (_, catalog):
            workflows = catalog.all()
    text = dump_workflows_yaml(workflows)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"Exported {len(workflows)} workflows to {output}", err=True)
