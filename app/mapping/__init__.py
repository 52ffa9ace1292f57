"""The mapping table: which IdP groups grant which COR workspaces, and whose COR user id.

table.py  the validated table, its rules and user id templates, and the look-ups intake makes
parse.py  reading mapping.yaml: YAML with line numbers, every mistake as file:line

A running bridge reloads it on change or SIGHUP: app/mapping_reload.py.
"""

from app.mapping.parse import load_mapping, parse_mapping
from app.mapping.table import (
    COR_SOURCES,
    DEFAULT_USER_ID,
    TEMPLATE_FIELDS,
    GroupRule,
    Mapping,
    ProviderConfig,
    template_fields,
)

__all__ = [
    "COR_SOURCES",
    "DEFAULT_USER_ID",
    "TEMPLATE_FIELDS",
    "GroupRule",
    "Mapping",
    "ProviderConfig",
    "load_mapping",
    "parse_mapping",
    "template_fields",
]
