#!/usr/bin/env bash
# Lists the import edges between the modules of each crate, at every depth, and reports every
# cycle.
#
# Usage: scripts/module-cycles.sh [-v] [--top] [CRATE_DIR...]   (default: every crates/*)
#        scripts/module-cycles.sh --self-test
#   -v           also print each crate's edges, with the first file:line that makes each one.
#   --top        the check as it was before nested modules: only the top-level modules are
#                nodes (a nested module counts as its top-level ancestor, edges inside one
#                top-level module are dropped) and `use` re-exports are not followed.
#   --self-test  builds tiny crates in a temporary directory and checks the verdicts.
#
# Nodes are the file modules reached from src/lib.rs or src/main.rs through `mod x;`
# declarations, named from their place in the tree: src/a.rs and src/a/mod.rs are `a`, src/a/b.rs
# is `a::b`. An inline `mod x { ... }` block (the usual `mod tests`) belongs to its file's module,
# though `super::` and `self::` inside it resolve as rustc does (`use super::*` in `mod tests`
# names the file's own module).
#
# An edge A -> B comes from a `crate::`, `super::` or `self::` path in module A's file (in a
# `use`, inside grouped `use` braces, or in an expression), resolved to the longest prefix that
# is a known module, after following `use` declarations that bind a name (`pub use
# service::stream;` in lib.rs makes `crate::stream::Hub` an edge to `service::stream`, and
# `pub use error::Error;` makes `crate::Error` an edge to `error`, not to the root).
# A path to B where B is A itself or one of A's descendants is containment, not an import (a
# parent declares and re-exports its children), and is not an edge; a path to an ancestor or to
# any other module is. The crate root is not a node: it is everyone's ancestor and contains
# everything, so it can never be on a cycle. `pub(in crate::x)` is visibility, not an import.
# Comments and string literals are ignored, except a string that is a whole `crate::`/`super::`
# path (serde's `with = "crate::m::f"` attributes).
#
# Edges found after a file's first `#[cfg(test)]` (and every edge of a file module declared after
# its parent's first `#[cfg(test)]`) are test edges. A cycle made of non-test edges fails (exit
# 1); a cycle that needs a test edge is only reported as a warning, since unit tests borrowing a
# fixture from a sibling module do not tie the modules' code together.
#
# Not followed: `#[path]` attributes, glob re-exports (`pub use crate::x::*`), paths relative to
# a name a glob brought in, macros that build paths.
#
# Needs bash and python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import os
import re
import shutil
import sys
import tempfile

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
KEYWORDS = ("crate", "super", "self")


def strip(text):
    """Blanks comments and string/char literals, keeping line breaks so line numbers hold."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            # A path in a string is a real use: `#[serde(with = "crate::serde_hex::dec")]`.
            if re.fullmatch(r"(crate|super|self)::[A-Za-z0-9_:]+", text[i + 1:j]):
                out.append(" " + text[i + 1:j] + " ")
            else:
                out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or text.startswith("'\\u{", i):
            j = text.find("'", i + 1 if text[i + 1] != "\\" else i + 3)
            out.append("' '")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def braced(text, start):
    """Text inside the braces opening at `start`, and the index after the closing brace."""
    depth, j = 0, start
    while j < len(text):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:j], j + 1
        j += 1
    return text[start + 1:], len(text)


def split_items(group):
    """The comma-separated items of a use group, at brace depth 0."""
    items, depth, item = [], 0, ""
    for c in group + ",":
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            if item.strip():
                items.append(item.strip())
            item = ""
        else:
            item += c
    return items


def use_tree(tree, prefix=()):
    """Expands a use tree (`a::{b, c::{self, D as E}}`) into (segments, bound name or None)."""
    tree = tree.strip()
    m = re.match(r"((?:" + IDENT + r"\s*::\s*)*)(\{|\*|" + IDENT + r")(.*)$", tree, re.S)
    if not m:
        return
    segs = prefix + tuple(s.strip() for s in m.group(1).split("::") if s.strip())
    last, rest = m.group(2), m.group(3)
    if last == "{":
        inner, _ = braced(tree, m.start(2))
        for item in split_items(inner):
            yield from use_tree(item, segs)
    elif last == "*":
        return
    elif last == "self":
        if segs:
            alias = re.match(r"\s*as\s+(" + IDENT + ")", rest)
            yield segs, alias.group(1) if alias else segs[-1]
    else:
        alias = re.match(r"\s*as\s+(" + IDENT + ")", rest)
        yield segs + (last,), alias.group(1) if alias else last


class Crate:
    """The module tree of one crate root, its aliases and its edges."""

    def __init__(self, src, root):
        self.src = src
        self.root = root
        self.files = {}  # module path (tuple) -> (file, whole file is test code)
        self.aliases = {}  # scope + (name,) -> the absolute path the name stands for
        self.edges = {}  # (a, b) -> (file:line, is_test)
        self.texts = {}
        self._walk(os.path.join(src, root), (), False)
        self.nodes = set(self.files) - {()}

    def _walk(self, path, module, test_only):
        self.files[module] = (path, test_only)
        text = strip(open(path, encoding="utf-8").read())
        self.texts[module] = text
        test_from = text.find("#[cfg(test)]")
        base = os.path.basename(path)
        if module == () or base == "mod.rs":
            folder = os.path.dirname(path)
        else:
            folder = os.path.join(os.path.dirname(path), base[:-3])
        inline = inline_spans(text)
        for m in re.finditer(r"(?<![\w$])mod\s+(" + IDENT + r")\s*;", text):
            scope = scope_at(inline, m.start())
            name = m.group(1)
            sub = os.path.join(folder, *scope)
            for cand in (os.path.join(sub, name + ".rs"), os.path.join(sub, name, "mod.rs")):
                if os.path.exists(cand):
                    child_test = test_only or (0 <= test_from < m.start())
                    self._walk(cand, module + scope + (name,), child_test)
                    break

    def expand(self, segs, scope):
        """The absolute path a `crate::`/`super::`/`self::` path names, through the aliases."""
        if not segs or segs[0] not in KEYWORDS:
            return None
        full, i = (), 0
        if segs[0] == "crate":
            i = 1
        else:
            full = scope
            while i < len(segs) and segs[i] in ("self", "super"):
                full = full[:-1] if segs[i] == "super" else full
                i += 1
        full = full + tuple(segs[i:])
        for _ in range(16):
            for k in range(1, len(full) + 1):
                if full[:k] in self.aliases and full[:k] not in self.nodes:
                    full = self.aliases[full[:k]] + full[k:]
                    break
            else:
                break
        return full

    def resolve(self, segs, scope):
        """The module a path names (its longest known prefix; () is the root), or None."""
        full = self.expand(segs, scope)
        if full is None:
            return None
        for k in range(len(full), 0, -1):
            if full[:k] in self.nodes:
                return full[:k]
        return ()

    def collect_aliases(self):
        """Each name a `use` declaration binds becomes a path to what it imports."""
        for _ in range(4):  # an alias may go through another alias
            for module, text in self.texts.items():
                inline = inline_spans(text)
                for m in re.finditer(r"(?<![\w$])use\s+([^;]*);", text):
                    scope = module + scope_at(inline, m.start())
                    for segs, name in use_tree(m.group(1)):
                        if segs[0] not in KEYWORDS:
                            # 2018 paths: relative to the scope when the first name is a module.
                            if scope + segs[:1] not in self.nodes and scope + segs[:1] not in self.aliases:
                                continue
                            segs = ("self",) + segs
                        full = self.expand(segs, scope)
                        key = scope + (name,)
                        if name != "_" and key not in self.nodes and self.resolve(segs, scope):
                            self.aliases.setdefault(key, full)

    def collect_edges(self):
        for module in sorted(self.nodes):
            path, test_only = self.files[module]
            text = self.texts[module]
            test_from = text.find("#[cfg(test)]")
            test_line = text.count("\n", 0, test_from) + 1 if test_from >= 0 else None
            inline = inline_spans(text)
            for m in re.finditer(r"(?<![\w$:])(crate|super|self)\s*::", text):
                if re.search(r"\bin\s+$", text[max(0, m.start() - 8):m.start()]):
                    continue  # pub(in crate::x)
                scope = module + scope_at(inline, m.start())
                line = text.count("\n", 0, m.start()) + 1
                is_test = test_only or (test_line is not None and line >= test_line)
                for segs in path_at(text, m.start()):
                    target = self.resolve(segs, scope)
                    if target is None or target == ():
                        continue
                    if target[:len(module)] == module:
                        continue  # itself or a descendant: containment
                    key = (module, target)
                    old = self.edges.get(key)
                    # Keep the first non-test evidence if there is one.
                    if old is None or (old[1] and not is_test):
                        self.edges[key] = (f"{path}:{line}", is_test)


def inline_spans(text):
    """(start, end, name) of every inline `mod name { ... }` block."""
    spans = []
    for m in re.finditer(r"(?<![\w$])mod\s+(" + IDENT + r")\s*\{", text):
        _, end = braced(text, m.end() - 1)
        spans.append((m.end() - 1, end, m.group(1)))
    return spans


def scope_at(spans, pos):
    return tuple(name for start, end, name in spans if start < pos < end)


def path_at(text, pos):
    """Every full path of the `crate::`/`super::`/`self::` path starting at `pos`."""
    m = re.match(r"((?:(?:crate|super|self)\s*::\s*)+)((?:" + IDENT + r"\s*::\s*)*)(\{|" + IDENT + ")?", text[pos:pos + 400])
    if not m:
        return []
    head = tuple(s.strip() for s in (m.group(1) + m.group(2)).split("::") if s.strip())
    last = m.group(3)
    if last == "{":
        inner, _ = braced(text, pos + m.start(3))
        return [segs for segs, _ in use_tree("{" + inner + "}", head)] or [head]
    return [head + ((last,) if last else ())]


def tarjan(nodes, adj):
    index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(adj.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return sccs


def a_cycle(comp, adj):
    """One concrete cycle through the component's first node (shortest by BFS)."""
    start = comp[0]
    members = set(comp)
    prev, queue = {start: None}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(adj.get(v, ())):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return comp + [start]


def place(where):
    path, line = where.rsplit(":", 1)
    return path, int(line)


def analyse(src, root, top):
    """(nodes, edges, code cycles, test-only cycles) of one crate root; nodes as `a::b`."""
    c = Crate(src, root)
    if not top:
        c.collect_aliases()
    c.collect_edges()
    name = "::".join
    edges = {}
    for (a, b), (where, is_test) in c.edges.items():
        if top:
            a, b = a[:1], b[:1]
            if a == b:
                continue
        key = (name(a), name(b))
        old = edges.get(key)
        if old is None or (old[1] and not is_test) or (old[1] == is_test and place(where) < place(old[0])):
            edges[key] = (where, is_test)
    nodes = {name(n[:1] if top else n) for n in c.nodes}
    code_adj, all_adj = {}, {}
    for (a, b), (_, is_test) in edges.items():
        all_adj.setdefault(a, set()).add(b)
        if not is_test:
            code_adj.setdefault(a, set()).add(b)
    code_sccs = tarjan(nodes, code_adj)
    test_sccs = [x for x in tarjan(nodes, all_adj) if x not in code_sccs]
    return nodes, edges, code_sccs, test_sccs, code_adj, all_adj


def report(label, result, verbose, out):
    nodes, edges, code_sccs, test_sccs, code_adj, all_adj = result
    status = "no cycle" if not code_sccs else f"{len(code_sccs)} cycle(s)"
    print(f"{label}: {len(nodes)} modules, {len(edges)} edges, {status}", file=out)
    if verbose:
        for (a, b), (where, is_test) in sorted(edges.items()):
            print(f"    {a} -> {b}   {where}{'  (test)' if is_test else ''}", file=out)
    for comp in code_sccs:
        cycle = a_cycle(comp, code_adj)
        print(f"  CYCLE among {{{', '.join(comp)}}}: {' -> '.join(cycle)}", file=out)
        for a, b in zip(cycle, cycle[1:]):
            print(f"    {a} -> {b}   {edges[(a, b)][0]}", file=out)
    for comp in test_sccs:
        cycle = a_cycle(comp, all_adj)
        print(f"  warning: cycle through test code among {{{', '.join(comp)}}}: {' -> '.join(cycle)}", file=out)
        for a, b in zip(cycle, cycle[1:]):
            where, is_test = edges[(a, b)]
            print(f"    {a} -> {b}   {where}{'  (test)' if is_test else ''}", file=out)
    return bool(code_sccs)


def check(crate, top=False, verbose=False, out=sys.stdout):
    """Reports one crate directory; returns (failed, [analysis per root])."""
    src = os.path.join(crate, "src")
    roots = [f for f in ("lib.rs", "main.rs") if os.path.exists(os.path.join(src, f))]
    if not roots:
        print(f"{crate}: no src/lib.rs or src/main.rs, skipped", file=out)
        return False, []
    failed, results = False, []
    for root in roots:
        result = analyse(src, root, top)
        label = crate if len(roots) == 1 else f"{crate} ({root})"
        failed |= report(label, result, verbose, out)
        results.append(result)
    return failed, results


SELF_TESTS = [
    # (name, files, --top, expected code cycles, expected test-only cycles)
    ("sibling cycle via super::", {
        "lib.rs": "pub mod a;\n",
        "a/mod.rs": "pub mod b;\npub mod c;\npub use b::B;\n",
        "a/b.rs": "use super::c::C;\npub struct B(C);\n",
        "a/c.rs": "pub struct C;\npub fn f() -> usize { std::mem::size_of::<super::b::B>() }\n",
    }, False, [["a::b", "a::c"]], []),
    ("the same, --top: one top-level module, no cycle", {
        "lib.rs": "pub mod a;\n",
        "a/mod.rs": "pub mod b;\npub mod c;\n",
        "a/b.rs": "use super::c::C;\npub struct B(C);\n",
        "a/c.rs": "use super::b::B;\npub struct C;\n",
    }, True, [], []),
    ("cycle via crate:: paths, in grouped braces", {
        "lib.rs": "mod x;\nmod y;\n",
        "x.rs": "mod inner;\n",
        "x/inner.rs": "pub fn f() { crate::y::g() }\n",
        "y.rs": "use crate::{x::{inner::f as h}, y as _};\npub fn g() { h() }\n",
    }, False, [["x::inner", "y"]], []),
    ("super::super::super:: climbs to the root; self:: in braces is containment", {
        "lib.rs": "mod p;\nmod q;\n",
        "p/mod.rs": "mod r;\nuse self::{r::{s::S}};\n",
        "p/r/mod.rs": "pub mod s;\n",
        "p/r/s.rs": "use super::super::super::q::Q;\npub struct S;\n",
        "q.rs": "pub struct Q;\nfn f(_: crate::p::r::s::S) {}\n",
    }, False, [["p::r::s", "q"]], []),
    ("parent and child use each other: containment, no cycle", {
        "lib.rs": "mod p;\n",
        "p.rs": "mod c;\npub use c::C;\nuse self::{c::helper};\npub struct P;\nfn f() { crate::p::c::helper(); }\n",
        "p/c.rs": "use super::P;\nuse crate::p::P as Q;\npub struct C;\npub fn helper() {}\n"
                  "#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::P;\n}\n",
    }, False, [], []),
    ("inline mod tests: super:: is the file's own module, not its parent", {
        "lib.rs": "mod a;\nmod x;\n",
        "a/mod.rs": "mod b;\nuse crate::x::X;\n",
        "a/b.rs": "pub struct B;\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::B as Z;\n}\n",
        "x.rs": "pub struct X;\nfn f(_: crate::a::b::B) {}\n",
    }, False, [], []),
    ("a cycle that needs a test edge is only a warning", {
        "lib.rs": "mod a;\nmod b;\n",
        "a.rs": "use crate::b::B;\npub struct A;\n",
        "b.rs": "pub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n",
    }, False, [], [["a", "b"]]),
    ("a module re-exported under the root is followed", {
        "lib.rs": "mod service;\nmod http;\npub use service::stream;\n",
        "service/mod.rs": "pub mod stream;\n",
        "service/stream.rs": "pub struct Hub;\nfn f() { crate::http::serve(); }\n",
        "http.rs": "pub fn serve() {}\nfn f(_: crate::stream::Hub) {}\n",
    }, False, [["http", "service::stream"]], []),
    ("an item the root re-exports is an edge to the module defining it", {
        "lib.rs": "mod a;\nmod error;\npub use error::Error;\n",
        "error.rs": "pub struct Error;\nfn f() { crate::a::g() }\n",
        "a.rs": "use crate::Error;\npub fn g() {}\n",
    }, False, [["a", "error"]], []),
    ("pub(in crate::a) is visibility, not an edge to the ancestor", {
        "lib.rs": "mod a;\nmod b;\n",
        "a.rs": "mod c;\nuse crate::b::B;\n",
        "a/c.rs": "pub(in crate::a) fn g() {}\n",
        "b.rs": "pub struct B;\nfn f() { crate::a::c::g() }\n",
    }, False, [], []),
    ("comments and strings are not edges", {
        "lib.rs": "mod a;\nmod b;\n",
        "a.rs": "use crate::b::B;\n",
        "b.rs": "pub struct B;\n// use crate::a::A;\nconst S: &str = \"see crate::a::A for more\";\n",
    }, False, [], []),
]


def self_test():
    failures = 0
    tmp = tempfile.mkdtemp(prefix="module-cycles-")
    try:
        for i, (name, files, top, want_code, want_test) in enumerate(SELF_TESTS):
            crate = os.path.join(tmp, f"case{i}")
            for rel, body in files.items():
                path = os.path.join(crate, "src", rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(body)
            with open(os.devnull, "w") as null:
                failed, results = check(crate, top=top, out=null)
            _, edges, code, test, _, _ = results[0]
            ok = code == want_code and test == want_test and failed == bool(want_code)
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
            if not ok:
                print(f"     code cycles {code} (want {want_code}), test-only {test} (want {want_test})")
                for (a, b), (where, is_test) in sorted(edges.items()):
                    print(f"     {a} -> {b}   {os.path.relpath(where, crate)}{'  (test)' if is_test else ''}")
    finally:
        shutil.rmtree(tmp)
    print(f"{len(SELF_TESTS) - failures} passed, {failures} failed")
    return failures == 0


def main():
    verbose, top, args = False, False, []
    for a in sys.argv[1:]:
        if a == "-v":
            verbose = True
        elif a == "--top":
            top = True
        elif a == "--self-test":
            sys.exit(0 if self_test() else 1)
        elif a.startswith("-"):
            print(f"unknown option {a}", file=sys.stderr)
            sys.exit(2)
        else:
            args.append(a.rstrip("/"))
    crates = args or sorted(
        os.path.join("crates", d) for d in os.listdir("crates") if os.path.isdir(os.path.join("crates", d, "src"))
    )
    failed = False
    for crate in crates:
        failed |= check(crate, top=top, verbose=verbose)[0]
    sys.exit(1 if failed else 0)


main()
PY
