"""A strict YAML loader for config files: plain data only, no surprises.

On top of ``yaml.SafeLoader`` it

* rejects duplicate keys (YAML says they are an error; PyYAML keeps the last one silently),
* rejects every explicit tag outside the plain-data set, with our own message and line
  (``!!python/...`` never gets near a constructor),
* rejects documents whose aliases expand to more than ``MAX_NODES`` nodes, or refer to
  themselves, so a "billion laughs" document cannot cost time or memory later (the size is
  computed once per distinct node, in linear time),
* does not turn dates into ``datetime`` or ``=`` into a special value: they stay strings,
* optionally expands ``${VAR}`` / ``${VAR:-default}`` in values before they are typed.

Every failure is a :class:`~pipeline.errors.ConfigError` whose message starts with
``SOURCE:LINE:COL:`` (or ``SOURCE:LINE:``) where a position is known.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipeline.errors import ConfigError

MAX_NODES = 100_000

_YAML = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML + "merge"
_PLAIN_TAGS = frozenset(
    _YAML + name for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge")
)
_IDENTIFIER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# ``$${`` is the escape for a literal ``${``; a ``${`` with no ``}`` is caught as an error.
_ENV_REF = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_ENV_BODY = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?$", re.DOTALL)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that types only plain YAML scalars and remembers explicit tags.

    Duplicate keys, foreign tags and alias bombs are caught on the composed node graph
    (:func:`_check_graph`), before anything is constructed.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.explicitly_tagged: set[int] = set()  # ids of scalar nodes written with a tag

    def compose_scalar_node(self, anchor: str | None) -> ScalarNode:
        tag = self.peek_event().tag
        node = super().compose_scalar_node(anchor)
        if tag not in (None, "!"):
            self.explicitly_tagged.add(id(node))
        return node


# Only the resolvers for plain data: no implicit timestamps or ``=`` values.
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag in _PLAIN_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_document(text: str, source: str, env: Mapping[str, str] | None = None) -> Any:
    """Parse one YAML document into plain Python data.

    ``source`` names the text in messages (a file name, or ``--set key``). When ``env`` is
    given, ``${VAR}`` references in values (not keys) are expanded (see :func:`expand_env`)
    and an unquoted value is typed from its expanded text, as if it had been written
    literally (``workers: ${N:-4}`` gives the int 4; ``"${N:-4}"`` the string "4").
    Returns ``None`` for an empty document.
    """
    loader = StrictLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_graph(loader, root, source)
        if env is not None:
            _expand_nodes(loader, root, env, source)
        return loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_describe_yaml_error(exc, source)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the document is nested too deeply") from None
    finally:
        loader.dispose()


def load_mapping(text: str, source: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Like :func:`load_document`, but the document must be a mapping."""
    data = load_document(text, source, env)
    if data is None:
        raise ConfigError(f"{source}: the config is empty (expected a mapping of settings)")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of settings, got {describe_value(data)}"
        )
    return data


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in ``text``.

    The default is used when VAR is unset or empty, as in the shell. ``$${`` writes a
    literal ``${``; any other ``$`` (``$$``, ``$HOME``, a regex's ``$``) is kept as is.
    Raises ``ValueError`` naming the variable when it is unset and has no default.
    """

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group("body")
        if body is None:
            raise ValueError("unclosed '${' (write '$${' for a literal '${')")
        ref = _ENV_BODY.match(body)
        if ref is None:
            raise ValueError(
                f"bad variable reference '${{{body}}}' (use ${{NAME}} or ${{NAME:-default}})"
            )
        name, default = ref.group("name"), ref.group("default")
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ValueError(
                    f"environment variable '{name}' is not set "
                    f"(write ${{{name}:-default}} to give a default)"
                )
            return default
        return value

    if "$" not in text:
        return text
    return _ENV_REF.sub(substitute, text)


def format_key_path(parts: Sequence[Any]) -> str:
    """``('steps', 2, 'regex')`` -> ``steps[2].regex``; odd keys are quoted."""
    out = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _IDENTIFIER_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{str(part)!r}]"
    return out or "(top level)"


def describe_value(value: Any, limit: int = 60) -> str:
    """A short, YAML-flavoured description of a value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"a string {text}" if isinstance(value, str) else text


def _describe_yaml_error(exc: yaml.MarkedYAMLError, source: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    if exc.context and exc.problem:
        if exc.problem.startswith("but "):  # "expected X, but found Y"
            problem = f"{exc.context}, {exc.problem}"
        elif exc.context_mark is not None:
            problem = f"{exc.problem} ({exc.context} on line {exc.context_mark.line + 1})"
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    return f"{where}: {problem}"


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _check_graph(loader: StrictLoader, root: Node, source: str) -> None:
    """Reject foreign tags, duplicate keys, self-referencing aliases and alias bombs.

    Aliases make the composed graph a DAG (or a cycle) of shared nodes; the expanded size
    of each node is computed once (post-order, memoised), so the check is linear in the
    document and never materialises the expansion.
    """
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            total = 1 + sum(size[id(child)] for child in _children(node))
            size[key] = min(total, MAX_NODES + 1)
            open_nodes.discard(key)
            continue
        if key in size:
            continue
        if key in open_nodes:
            mark = node.start_mark
            raise ConfigError(
                f"{source}:{mark.line + 1}: an alias refers to the node that contains it "
                "(recursive aliases are not allowed)"
            )
        _check_tag(node, source)
        if isinstance(node, MappingNode):
            _check_duplicate_keys(loader, node, source)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)
    if size[id(root)] > MAX_NODES:
        if len(size) > MAX_NODES:
            raise ConfigError(f"{source}: the document has more than {MAX_NODES} values")
        raise ConfigError(
            f"{source}: aliases (*name) expand the document to more than {MAX_NODES} values; "
            "refusing to load it (an alias bomb?)"
        )


def _check_tag(node: Node, source: str) -> None:
    if node.tag in _PLAIN_TAGS:
        return
    tag = "!!" + node.tag[len(_YAML) :] if node.tag.startswith(_YAML) else node.tag
    mark = node.start_mark
    why = "Python object tags are never loaded; " if "python/" in tag else ""
    raise ConfigError(
        f"{source}:{mark.line + 1}:{mark.column + 1}: tag '{tag}' is not allowed: {why}"
        "a config holds plain data only (strings, numbers, booleans, null, lists, mappings)"
    )


def _check_duplicate_keys(loader: StrictLoader, node: MappingNode, source: str) -> None:
    """YAML forbids duplicate keys; PyYAML would silently keep the last one."""
    seen: dict[Any, Node] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag not in _PLAIN_TAGS:
            continue  # merge keys may be overridden by design; other tags fail on their own
        if key_node.tag == _MERGE_TAG:
            continue
        key = loader.yaml_constructors[key_node.tag](loader, key_node)
        first = seen.setdefault(key, key_node)
        if first is not key_node:
            mark = key_node.start_mark
            raise ConfigError(
                f"{source}:{mark.line + 1}:{mark.column + 1}: duplicate key {key!r} "
                f"(first defined on line {first.start_mark.line + 1})"
            )


def _expand_nodes(loader: StrictLoader, root: Node, env: Mapping[str, str], source: str) -> None:
    """Expand env references in every scalar value (not in keys), once per distinct node."""
    seen: set[int] = set()
    tagged = loader.explicitly_tagged
    stack: list[tuple[Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend((child, (*path, i)) for i, child in enumerate(node.value))
        elif isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, ScalarNode) else "?"
                stack.append((value_node, (*path, key)))
        elif isinstance(node, ScalarNode) and node.tag == _YAML + "str" and "$" in node.value:
            try:
                expanded = expand_env(node.value, env)
            except ValueError as exc:
                line = node.start_mark.line + 1
                raise ConfigError(f"{source}:{line}: {format_key_path(path)}: {exc}") from None
            if expanded != node.value and node.style is None and id(node) not in tagged:
                # An unquoted value is typed from what it expands to, as if written so.
                node.tag = loader.resolve(ScalarNode, expanded, (True, False))
            node.value = expanded
