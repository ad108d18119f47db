"""Workflows as YAML files: `billbridge workflows apply FILE.yaml` and `workflows export`.

    workflows = load_workflows_yaml(path.read_text())   # validated, or WorkflowValidationError
    text = dump_workflows_yaml(catalog.all())           # loads back to the same workflows

A file holds either `workflows:` with a list, or one workflow mapping. Problems are
reported by path (`workflows.2.actions.1.segment_id`), a YAML syntax error by line and
column under the key `yaml`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from billbridge.errors import WorkflowValidationError
from billbridge.workflows.model import Workflow, validate_workflow

_HEADER = (
    "# Billbridge workflows. Apply with: billbridge workflows apply FILE.yaml\n"
    "# Format and template rules: docs/internals.md (Workflow definition).\n"
)


def _syntax_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"not valid YAML: {problem}"


class _NoAliasLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without aliases: a 469-byte file of nested `*alias` lists expands
    to a million nodes (billion laughs), and a workflow never needs one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML aliases (*name) are not allowed in workflow files: write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _documents(text: str) -> tuple[list[Any], str]:
    """The workflow mappings in the file and the path prefix their problems get."""
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise WorkflowValidationError({"yaml": _syntax_message(exc)}) from None
    if data is None:
        return [], "workflows."
    if isinstance(data, Mapping) and "workflows" in data:
        extra = sorted(str(key) for key in data if key != "workflows")
        if extra:
            raise WorkflowValidationError({extra[0]: "unknown top-level key (only `workflows`)"})
        items = data["workflows"]
        if items is None:
            return [], "workflows."
        if not isinstance(items, list):
            raise WorkflowValidationError({"workflows": "must be a list of workflows"})
        return items, "workflows."
    if isinstance(data, Mapping):
        return [data], ""
    raise WorkflowValidationError(
        {"yaml": "expected `workflows:` with a list of workflows, or one workflow mapping"}
    )


def load_workflows_yaml(text: str) -> list[Workflow]:
    """Parse and validate every workflow in a YAML document (all problems at once)."""
    items, prefix = _documents(text)
    single = prefix == ""
    workflows: list[Workflow] = []
    problems: dict[str, str] = {}
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        item_prefix = "" if single else f"{prefix}{index}."
        if not isinstance(item, Mapping):
            problems[item_prefix.rstrip(".") or "workflow"] = "must be a mapping of fields"
            continue
        try:
            workflow = validate_workflow(item)
        except WorkflowValidationError as exc:
            problems.update({f"{item_prefix}{path}": msg for path, msg in exc.problems.items()})
            continue
        if workflow.id in first_index:
            problems[f"{item_prefix}id"] = (
                f"{workflow.id!r} is already used by workflows.{first_index[workflow.id]}"
            )
            continue
        first_index[workflow.id] = index
        workflows.append(workflow)
    if problems:
        raise WorkflowValidationError(problems)
    return workflows


class _Dumper(yaml.SafeDumper):
    """Block style, but a multi-line string as a `|` block so it stays readable; never an
    alias (the loader refuses them), even when two values are the same object."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_workflows_yaml(workflows: Iterable[Workflow]) -> str:
    """YAML for `workflows:` in a stable order (fields as documented, workflows as given),
    with a blank line between workflows; `load_workflows_yaml` reads it back."""
    data = {"workflows": [workflow.to_data() for workflow in workflows]}
    text = yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=10_000,  # never fold a template over two lines
    )
    # Each top-level list item starts with "- id:" at column 0 (id is the first field);
    # a blank line between workflows, not before the first.
    head, sep, rest = text.partition("\n- id: ")
    text = head + sep + rest.replace("\n- id: ", "\n\n- id: ")
    return _HEADER + text
