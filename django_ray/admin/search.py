"""The executions changelist's search box, answered from indexes (docs/performance.md).

Django's default search ORs ``UPPER(column) LIKE UPPER('%term%')`` over every search field:
a scan of the whole table per search (2.5 s at 200,000 rows). Here each whitespace-separated
term means one thing, and every term must match:

- a plain term: a task id, whole (the unique index) or its first characters (the ``task_id``
  pattern index), or the start of a callable path (``myapp.tasks.send``; its pattern index);
  a dashed UUID is read as the hex task id;
- ``worker:ID``: rows claimed by that worker (exact);
- ``key:KEY``: rows with that dedupe key or lock key (exact);
- ``error:TEXT``: the error message contains TEXT, case-insensitive. The one search that reads
  every row: narrow it with a filter (state, queue) on a large table.
"""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Q, QuerySet
from django.utils.text import smart_split, unescape_string_literal

#: The search box's help text: the syntax above, in one line.
HELP_TEXT = (
    "Task id (whole or its start) or callable path start; worker:ID, key:KEY, "
    "error:TEXT (error:TEXT reads every row: add a filter first)."
)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: Length of a task id (``uuid4().hex``): a term this long is looked up by equality.
TASK_ID_LENGTH = 32


def term_condition(term: str) -> Q:
    """The condition one search term stands for (see the module docstring)."""
    prefix, _, rest = term.partition(":")
    if len(rest) > 1 and rest[0] in "\"'" and rest[0] == rest[-1]:
        rest = unescape_string_literal(rest)  # error:"two words"
    if rest and prefix == "worker":
        return Q(claimed_by_worker=rest)
    if rest and prefix == "key":
        return Q(unique_key=rest) | Q(lock_key=rest)
    if rest and prefix == "error":
        return Q(error_message__icontains=rest)
    task_id = term.replace("-", "").lower() if _UUID.match(term) else term
    by_id = Q(task_id=task_id) if len(task_id) == TASK_ID_LENGTH else Q(task_id__startswith=task_id)
    return by_id | Q(callable_path__startswith=term)


def search(queryset: QuerySet[Any], search_term: str) -> QuerySet[Any]:
    """``queryset`` narrowed to the rows matching every term of ``search_term``."""
    for bit in smart_split(search_term):
        if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
            bit = unescape_string_literal(bit)
        if bit:
            queryset = queryset.filter(term_condition(bit))
    return queryset
