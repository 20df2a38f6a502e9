"""Find the definitions (functions, classes, ...) in a tree-sitter syntax tree.

A definition's span starts at whatever belongs to it above the bare node: its wrapper
(decorators, `export`, `template <...>`), sibling prefixes (Rust `#[attr]`) and the
comments directly above it. Most node types are read straight from the table in
languages.py; the rules below cover the shapes a node type alone cannot tell apart.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, cast

from tree_sitter import Language, Node, Parser, Tree
from tree_sitter_language_pack import get_language

from codequarry.chunking.languages import LANGUAGES, LanguageSpec

if TYPE_CHECKING:
    from tree_sitter_language_pack import SupportedLanguage


@dataclass(frozen=True, slots=True)
class Definition:
    """One definition. `kind` is one of: function, method, class, interface, struct,
    enum, trait, impl, module, namespace, object, type."""

    kind: str
    name: str | None
    start_line: int  # 1-based; includes wrappers, sibling prefixes and doc comments
    end_line: int  # 1-based, inclusive
    depth: int  # nesting depth among definitions (0 = top level)


# ------------------------------------------------------------------------------ parsing


class _ThreadParsers(threading.local):
    """A Parser is not safe to share between threads; each thread gets its own."""

    def __init__(self) -> None:
        self.by_language: dict[str, Parser] = {}


_parsers = _ThreadParsers()


def parse(source: bytes, language: str) -> Tree:
    """Parse `source` with the grammar of `language` (a key of LANGUAGES)."""
    parser = _parsers.by_language.get(language)
    if parser is None:
        parser = _parsers.by_language[language] = Parser(_grammar(language))
    return parser.parse(source)


@cache
def _grammar(language: str) -> Language:
    _spec(language)
    return get_language(cast("SupportedLanguage", language))


def _spec(language: str) -> LanguageSpec:
    try:
        return LANGUAGES[language]
    except KeyError:
        raise ValueError(f"no tree-sitter definition table for {language!r}") from None


# ------------------------------------------------------------------------------ walking

_CLASS_LIKE_KINDS = frozenset({"class", "interface", "struct", "enum", "trait", "impl", "object"})
# Languages sharing grammar shapes, and so the rules below.
_JS_FAMILY = frozenset({"javascript", "typescript", "tsx"})
_TS_FAMILY = frozenset({"typescript", "tsx"})
_C_FAMILY = frozenset({"c", "cpp"})


def find_definitions(tree: Tree, language: str, source: bytes) -> list[Definition]:
    """All definitions in `tree`, nested ones included, in document order.

    The descent uses an explicit stack: syntax trees of generated or minified code can
    be far deeper than Python's recursion limit.
    """
    spec = _spec(language)
    found: list[Definition] = []
    # Comments seen so far, in document order. A preorder walk reaches every comment
    # that ends before a definition before the definition itself.
    comments: list[Node] = []
    comment_ends: list[int] = []
    # (node, kind of the nearest enclosing definition, depth among definitions)
    pending: list[tuple[Node, str | None, int]] = [
        (child, None, 0) for child in reversed(tree.root_node.children)
    ]
    while pending:
        node, enclosing_kind, depth = pending.pop()
        if not node.is_named:
            continue
        if node.type in spec.comments:
            comments.append(node)
            comment_ends.append(node.end_byte)
            continue
        kind = _definition_kind(node, spec)
        if kind is not None:
            name = _definition_name(node, language)
            kind = _member_kind(node, language, kind, name, enclosing_kind)
            outer = _outer_node(node, spec)
            start_row = _span_start_row(outer, spec, source, comments, comment_ends)
            found.append(Definition(kind, name, start_row + 1, _end_line(outer), depth))
            enclosing_kind, depth = kind, depth + 1
        pending.extend((child, enclosing_kind, depth) for child in reversed(node.children))
    return found


def _member_kind(
    node: Node, language: str, kind: str, name: str | None, enclosing_kind: str | None
) -> str:
    """A function directly inside a class-like definition is a method."""
    if kind != "function":
        return kind
    if node.parent is not None and node.parent.type == "friend_declaration":
        return "function"  # a C++ inline friend is a free function
    if enclosing_kind in _CLASS_LIKE_KINDS:
        return "method"
    if language in _C_FAMILY and name is not None and "::" in name:
        return "method"  # out-of-line Foo::bar (also catches ns::free_fn, unavoidably)
    return "function"


def _outer_node(node: Node, spec: LanguageSpec) -> Node:
    """The node whose span is the definition's: climb through wrappers (decorators,
    export, template <...>, declare) unless the wrapper also holds other definitions
    (Go's grouped `type ( A ...; B ... )`)."""
    outer = node
    while outer.parent is not None and outer.parent.type in spec.wrappers:
        wrapper = outer.parent
        if any(
            child.id != outer.id and child.type in spec.definitions
            for child in wrapper.named_children
        ):
            break
        outer = wrapper
    # a top-level TypeScript `namespace X {}` parses as an expression statement
    if (
        spec.name in _TS_FAMILY
        and outer.type == "internal_module"
        and outer.parent is not None
        and outer.parent.type == "expression_statement"
    ):
        outer = outer.parent
    return outer


def _span_start_row(
    outer: Node,
    spec: LanguageSpec,
    source: bytes,
    comments: list[Node],
    comment_ends: list[int],
) -> int:
    """0-based row where the definition's span starts, after taking in its sibling
    prefixes and the comments directly above it.

    Comments are found by text adjacency rather than siblinghood because grammars
    sometimes nest them in the preceding node (a Kotlin KDoc inside import_list, a Ruby
    comment before a class body's first statement).
    """
    start_byte, start_row = outer.start_byte, outer.start_point.row
    current: Node | None = outer  # None once the chain left outer's siblings
    while True:
        previous = current.prev_named_sibling if current is not None else None
        if (
            previous is not None
            and previous.type in spec.sibling_prefixes
            and _adjacent(source, previous.end_byte, start_byte)
        ):
            current = previous
            start_byte, start_row = previous.start_byte, previous.start_point.row
            continue
        index = bisect.bisect_right(comment_ends, start_byte) - 1
        if index >= 0:
            comment = comments[index]
            if (
                _adjacent(source, comment.end_byte, start_byte)
                and _starts_line(source, comment.start_byte)
                and not _is_file_comment(comment, spec, source)
            ):
                current = comment if _same_parent(comment, current) else None
                start_byte, start_row = comment.start_byte, comment.start_point.row
                continue
        return start_row


def _adjacent(source: bytes, end: int, start: int) -> bool:
    """Only whitespace and at most one line break between `end` and `start`."""
    gap = source[end:start]
    return gap.strip() == b"" and gap.count(b"\n") <= 1


def _starts_line(source: bytes, position: int) -> bool:
    """Nothing but whitespace before `position` on its line (not a trailing comment)."""
    line_start = source.rfind(b"\n", 0, position) + 1
    return source[line_start:position].strip() == b""


def _is_file_comment(comment: Node, spec: LanguageSpec, source: bytes) -> bool:
    """A shebang, or Rust `//!` / `/*!` documenting the enclosing module."""
    opening = source[comment.start_byte : comment.start_byte + 3]
    return opening == b"#!/" or (spec.name == "rust" and opening in (b"//!", b"/*!"))


def _same_parent(a: Node, b: Node | None) -> bool:
    if b is None or a.parent is None or b.parent is None:
        return False
    return a.parent.id == b.parent.id


def _end_line(node: Node) -> int:
    """1-based last line; a node ending at column 0 (a Rust `///` comment includes its
    newline) ends on the line before."""
    row, column = node.end_point
    return row + 1 if column > 0 else max(row, node.start_point.row + 1)


# ------------------------------------------------------------------------------ kinds

_JS_FUNCTION_VALUES = frozenset(
    {"arrow_function", "function_expression", "function", "generator_function"}
)
_JS_CLASS_VALUES = frozenset({"class"})

# (language, node type) -> rule deciding the kind of that node, given the table's kind
# (None for node types that are definitions only in some shapes). A rule returns None
# when the node is not a definition after all.
_KindRule = Callable[[Node, str | None], str | None]
_KIND_RULES: dict[tuple[str, str], _KindRule] = {}


def _definition_kind(node: Node, spec: LanguageSpec) -> str | None:
    if node.type not in spec.definitions:
        return None
    table_kind = spec.definitions[node.type]
    rule = _KIND_RULES.get((spec.name, node.type))
    return rule(node, table_kind) if rule is not None else table_kind


def _kind_rule(
    languages: frozenset[str] | str, *node_types: str
) -> Callable[[_KindRule], _KindRule]:
    """Register the decorated function as the kind rule for `node_types`."""
    names = {languages} if isinstance(languages, str) else languages

    def register(rule: _KindRule) -> _KindRule:
        for language in names:
            for node_type in node_types:
                _KIND_RULES[language, node_type] = rule
        return rule

    return register


def _js_bound_value(declaration: Node) -> tuple[Node, Node] | None:
    """(declarator, value) of the first `x = <function or class>` in a declaration."""
    for declarator in declaration.named_children:
        if declarator.type != "variable_declarator":
            continue
        value = declarator.child_by_field_name("value")
        if value is not None and value.type in _JS_FUNCTION_VALUES | _JS_CLASS_VALUES:
            return declarator, value
    return None


def _js_assignment(statement: Node) -> Node | None:
    """The `a.b = function () {}` assignment inside an expression statement, if any."""
    expression = statement.named_children[0] if statement.named_children else None
    if expression is None or expression.type != "assignment_expression":
        return None
    value = expression.child_by_field_name("right")
    return expression if value is not None and value.type in _JS_FUNCTION_VALUES else None


@_kind_rule(_JS_FAMILY, "lexical_declaration", "variable_declaration")
def _js_declaration_kind(node: Node, _: str | None) -> str | None:
    bound = _js_bound_value(node)
    if bound is None:
        return None
    return "class" if bound[1].type in _JS_CLASS_VALUES else "function"


@_kind_rule(_JS_FAMILY, "field_definition", "public_field_definition")
def _js_field_kind(node: Node, _: str | None) -> str | None:
    value = node.child_by_field_name("value")
    return "method" if value is not None and value.type in _JS_FUNCTION_VALUES else None


@_kind_rule(_JS_FAMILY, "export_statement")
def _js_export_kind(node: Node, _: str | None) -> str | None:
    """`export default function () {}` / `export default class {}`; an export with a
    declaration is a wrapper instead."""
    if node.child_by_field_name("declaration") is not None:
        return None
    value = node.child_by_field_name("value")
    if value is None:
        return None
    if value.type in _JS_FUNCTION_VALUES:
        return "function"
    return "class" if value.type in _JS_CLASS_VALUES else None


@_kind_rule(_JS_FAMILY, "expression_statement")
def _js_assignment_kind(node: Node, _: str | None) -> str | None:
    return "function" if _js_assignment(node) is not None else None


@_kind_rule(_JS_FAMILY, "method_definition")
def _js_method_kind(node: Node, table_kind: str | None) -> str | None:
    if node.parent is not None and node.parent.type == "object":
        return None  # a method in an object literal
    return table_kind


@_kind_rule(_C_FAMILY, "type_definition")
def _c_typedef_kind(node: Node, _: str | None) -> str | None:
    """`typedef struct {...} name_t;` is the struct's definition; plain typedefs are not."""
    aliased = node.child_by_field_name("type")
    if aliased is None or aliased.child_by_field_name("body") is None:
        return None
    return {
        "struct_specifier": "struct",
        "union_specifier": "struct",
        "enum_specifier": "enum",
        "class_specifier": "class",
    }.get(aliased.type)


@_kind_rule(_C_FAMILY, "struct_specifier", "union_specifier", "enum_specifier", "class_specifier")
def _c_specifier_kind(node: Node, table_kind: str | None) -> str | None:
    if node.child_by_field_name("body") is None:
        return None  # a forward declaration or a use such as `struct point *p`
    if node.parent is not None and node.parent.type == "type_definition":
        return None  # reported through the typedef, under the typedef's name
    return table_kind


@_kind_rule("go", "type_spec")
def _go_type_kind(node: Node, _: str | None) -> str | None:
    declared = node.child_by_field_name("type")
    if declared is not None and declared.type == "struct_type":
        return "struct"
    if declared is not None and declared.type == "interface_type":
        return "interface"
    return "type"


@_kind_rule("rust", "mod_item")
@_kind_rule("php", "namespace_definition")
def _needs_body_kind(node: Node, table_kind: str | None) -> str | None:
    """Rust `mod x;` and PHP `namespace X;` declare, but do not contain, their content."""
    return table_kind if node.child_by_field_name("body") is not None else None


@_kind_rule("kotlin", "class_declaration")
def _kotlin_class_kind(node: Node, _: str | None) -> str | None:
    keywords = {child.type for child in node.children if not child.is_named}
    if "interface" in keywords:
        return "interface"
    if "enum" in keywords or any(child.type == "enum_class_body" for child in node.children):
        return "enum"
    return "class"


@_kind_rule("swift", "class_declaration")
def _swift_class_kind(node: Node, _: str | None) -> str | None:
    keyword = node.child_by_field_name("declaration_kind")
    kinds = {"struct": "struct", "enum": "enum", "extension": "impl"}  # class, actor: class
    return kinds.get(_text(keyword), "class") if keyword is not None else "class"


# ------------------------------------------------------------------------------ names

# (language, node type) -> rule extracting the name where the `name` field is missing
# or misleading.
_NameRule = Callable[[Node], str | None]
_NAME_RULES: dict[tuple[str, str], _NameRule] = {}


def _definition_name(node: Node, language: str) -> str | None:
    rule = _NAME_RULES.get((language, node.type))
    if rule is not None:
        return rule(node)
    return _field_text(node, "name")


def _name_rule(
    languages: frozenset[str] | str, *node_types: str
) -> Callable[[_NameRule], _NameRule]:
    """Register the decorated function as the name rule for `node_types`."""
    names = {languages} if isinstance(languages, str) else languages

    def register(rule: _NameRule) -> _NameRule:
        for language in names:
            for node_type in node_types:
                _NAME_RULES[language, node_type] = rule
        return rule

    return register


def _text(node: Node) -> str:
    return (node.text or b"").decode("utf-8", "replace")


def _field_text(node: Node, field: str) -> str | None:
    child = node.child_by_field_name(field)
    return _text(child) if child is not None else None


def _first_child_text(node: Node, types: frozenset[str]) -> str | None:
    for child in node.children:
        if child.type in types:
            return _text(child)
    return None


@_name_rule(_JS_FAMILY, "lexical_declaration", "variable_declaration")
def _js_declaration_name(node: Node) -> str | None:
    bound = _js_bound_value(node)
    return _field_text(bound[0], "name") if bound is not None else None


@_name_rule(_JS_FAMILY, "field_definition", "public_field_definition")
def _js_field_name(node: Node) -> str | None:
    return _field_text(node, "property") or _field_text(node, "name")


@_name_rule(_JS_FAMILY, "export_statement")
def _js_export_name(node: Node) -> str | None:
    value = node.child_by_field_name("value")
    name = _field_text(value, "name") if value is not None else None
    return name or "default"


@_name_rule(_JS_FAMILY, "expression_statement")
def _js_assignment_name(node: Node) -> str | None:
    assignment = _js_assignment(node)
    return _field_text(assignment, "left") if assignment is not None else None


@_name_rule(_TS_FAMILY, "module")
def _ts_module_name(node: Node) -> str | None:
    name = _field_text(node, "name")  # declare module 'foo': a string literal
    return name.strip("'\"`") if name is not None else None


@_name_rule(_C_FAMILY, "function_definition", "type_definition")
def _c_declarator_name(node: Node) -> str | None:
    return _declarator_name(node.child_by_field_name("declarator"))


@_name_rule(
    _C_FAMILY,
    "namespace_definition", "struct_specifier", "union_specifier", "enum_specifier",
    "class_specifier",
)
def _c_scope_name(node: Node) -> str | None:
    return _field_text(node, "name") or "(anonymous)"


# Declarator nodes that are the name itself.
_C_NAME_LEAVES = frozenset({
    "identifier", "field_identifier", "qualified_identifier", "destructor_name",
    "operator_name", "type_identifier", "template_function", "operator_cast",
    "primitive_type",
})
# Children of a declarator that are never the inner declarator.
_C_DECLARATOR_DECORATIONS = frozenset({
    "type_qualifier", "attribute_specifier", "ms_pointer_modifier", "parameter_list",
    "attribute_declaration",
})


def _declarator_name(declarator: Node | None) -> str | None:
    """Descend pointer / reference / function / array / parenthesized / attributed
    declarators to the declared name (`int (*fp(void))[3]` -> fp).

    Reference and parenthesized declarators hold their inner declarator without a field
    name, so the first named child that is not a decoration is taken.
    """
    node = declarator
    for _ in range(32):  # declarators nest a handful deep; guard against odd error trees
        if node is None:
            return None
        if node.type in _C_NAME_LEAVES:
            return _c_leaf_name(node)
        inner = node.child_by_field_name("declarator")
        if inner is None:
            inner = next(
                (c for c in node.named_children if c.type not in _C_DECLARATOR_DECORATIONS),
                None,
            )
        node = inner
    return None


def _c_leaf_name(node: Node) -> str:
    if node.type == "operator_cast":  # operator bool() const
        target = node.child_by_field_name("type") or node
        return "operator " + _text(target).split("(")[0].strip()
    if node.type == "qualified_identifier":  # Foo::operator bool: scope + cast name
        inner = node.child_by_field_name("name")
        if inner is not None and inner.type == "operator_cast":
            scope = _text(node)[: inner.start_byte - node.start_byte]
            return scope + _c_leaf_name(inner)
    return _text(node)


@_name_rule("rust", "impl_item")
def _rust_impl_name(node: Node) -> str | None:
    implemented = node.child_by_field_name("type")
    while implemented is not None and implemented.type == "generic_type":  # Wrapper<T>
        implemented = implemented.child_by_field_name("type")
    return _text(implemented) if implemented is not None else None


@_name_rule("csharp", "destructor_declaration")
def _csharp_destructor_name(node: Node) -> str | None:
    return "~" + (_field_text(node, "name") or "")


@_name_rule("csharp", "operator_declaration")
def _csharp_operator_name(node: Node) -> str | None:
    return "operator " + (_field_text(node, "operator") or "?")


@_name_rule("csharp", "conversion_operator_declaration")
def _csharp_conversion_name(node: Node) -> str | None:
    return "operator " + (_field_text(node, "type") or "?")


# The Kotlin grammar has no `name` fields: the name is the first identifier child (a
# function's receiver type is a separate node, so `String.shout` yields `shout`).
_KOTLIN_TYPE_NAMES = frozenset({"type_identifier", "simple_identifier"})


@_name_rule("kotlin", "class_declaration", "object_declaration", "type_alias")
def _kotlin_type_name(node: Node) -> str | None:
    return _first_child_text(node, _KOTLIN_TYPE_NAMES)


@_name_rule("kotlin", "companion_object")
def _kotlin_companion_name(node: Node) -> str | None:
    return _first_child_text(node, _KOTLIN_TYPE_NAMES) or "Companion"


@_name_rule("kotlin", "function_declaration")
def _kotlin_function_name(node: Node) -> str | None:
    return _first_child_text(node, frozenset({"simple_identifier"}))


# Swift puts the `name` field on the return type too; the first one (what
# child_by_field_name returns) is right except for these, which have no name of their own.
@_name_rule("swift", "init_declaration")
def _swift_init_name(_: Node) -> str | None:
    return "init"


@_name_rule("swift", "deinit_declaration")
def _swift_deinit_name(_: Node) -> str | None:
    return "deinit"


@_name_rule("swift", "subscript_declaration")
def _swift_subscript_name(_: Node) -> str | None:
    return "subscript"


@_name_rule("scala", "extension_definition")
def _scala_extension_name(node: Node) -> str | None:
    """`extension (s: String)` has no name: use the extended type."""
    parameters = node.child_by_field_name("parameters")
    parameter = None
    if parameters is not None:
        parameter = next((c for c in parameters.children if c.type == "parameter"), None)
    extended = parameter.child_by_field_name("type") if parameter is not None else None
    return _text(extended) if extended is not None else "extension"
