"""What a session computes, as a key: two versions of a model with the same program key differ only
in their variables' values, so a session that has one loaded can serve the other after restoring
its checkpoint (standby.py).

The key covers everything of a MetaGraphDef that TensorFlow's SavedModel loader puts into a
session or runs there (graph and function library, saver, signatures, asset files and the assets'
contents, collections), serialized deterministically. Not the SavedObjectGraph (Python's view of
the model) nor meta_info_def (versions and tags, which the loader has matched already).

TensorFlow names the functions it traces from a process-wide counter, so two exports of the same
model made by different runs call theirs `__inference_serve_123` and `__inference_serve_456`, and
one export may hold several functions of one base name. So the key renames the functions the graph
reaches by the order in which a walk from its nodes first reaches them (a bijection, the same for
the same program), and leaves out functions nothing reaches. Nothing else is regularized: a
constant that differs (a temperature, a label) gives another key. TensorFlow's own
`graph_def_program_hash` (fingerprint.pb) is not used: it is blind to the values of constants
(checked: two exports whose softmax temperature constants differed had the same hash).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tensorflow.core.framework import function_pb2, graph_pb2, node_def_pb2
from tensorflow.core.protobuf import meta_graph_pb2


def canonical_graph(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """A copy of `graph_def` whose library holds only the functions its nodes reach, renamed
    f0, f1, ... in the order a depth-first walk of the nodes (in order) first reaches them."""
    library = {function.signature.name: function for function in graph_def.library.function}
    gradients = {gradient.function_name: gradient.gradient_func for gradient in graph_def.library.gradient}
    names: dict[str, str] = {}        # original -> canonical, in the order reached

    def visit(name: str) -> None:
        if name in names:
            return
        names[name] = f"f{len(names)}"
        reach(library[name].node_def)
        if gradients.get(name) in library:
            visit(gradients[name])

    def reach(nodes) -> None:
        for node in nodes:
            for name in referenced_functions(node, library):
                visit(name)

    reach(graph_def.node)
    canonical = graph_pb2.GraphDef()
    canonical.versions.CopyFrom(graph_def.versions)
    canonical.node.extend(graph_def.node)
    for name in names:
        canonical.library.function.add().CopyFrom(library[name])
    for gradient in graph_def.library.gradient:
        if gradient.function_name in names:
            canonical.library.gradient.add(function_name=names[gradient.function_name],
                                           gradient_func=names.get(gradient.gradient_func, gradient.gradient_func))
    for function in canonical.library.function:
        function.signature.name = names[function.signature.name]
        rename_references(function.node_def, names)
        canonical_arguments(function)
    rename_references(canonical.node, names)
    return canonical


def referenced_functions(node: node_def_pb2.NodeDef, library) -> list[str]:
    """The library functions a node calls: as its op, or in func / list(func) attributes, the
    attributes of those included (in attribute-name order). These are all the ways a graph
    names a function to run, so a function nothing reaches this way never runs in the session."""
    found = [node.op] if node.op in library else []
    for key in sorted(node.attr):
        found.extend(call.name for call in _calls_in(node.attr[key]))
    return [name for name in found if name in library]


def _calls_in(value):
    """Every function call (NameAttrList) an attribute value names, nested ones included, in
    attribute-name order."""
    kind = value.WhichOneof("value")
    for call in [value.func] if kind == "func" else value.list.func if kind == "list" else []:
        yield call
        for key in sorted(call.attr):
            yield from _calls_in(call.attr[key])


def canonical_arguments(function: function_pb2.FunctionDef) -> None:
    """Name a function's arguments and results by position ("@in0", "@out0": "@" is in no node
    name, so nothing collides), in its body and its return map too; drop the argument names the
    user specified (metadata); number the resource-argument ids by first appearance. TensorFlow
    derives those names and ids from its counter as well."""
    inputs = {arg.name: f"@in{index}" for index, arg in enumerate(function.signature.input_arg)}
    outputs = {arg.name: f"@out{index}" for index, arg in enumerate(function.signature.output_arg)}
    for arg in function.signature.input_arg:
        arg.name = inputs[arg.name]
    for arg in function.signature.output_arg:
        arg.name = outputs[arg.name]
    for node in function.node_def:
        renamed = [_renamed_input(name, inputs) for name in node.input]
        del node.input[:]
        node.input.extend(renamed)
    returns = {outputs.get(key, key): _renamed_input(value, inputs) for key, value in function.ret.items()}
    function.ret.clear()
    function.ret.update(returns)
    for attributes in function.arg_attr.values():
        attributes.attr.pop("_user_specified_name", None)
    ids: dict[int, int] = {}
    numbered = {index: ids.setdefault(value, len(ids)) for index, value in sorted(function.resource_arg_unique_id.items())}
    function.resource_arg_unique_id.clear()
    function.resource_arg_unique_id.update(numbered)


def _renamed_input(reference: str, names: dict[str, str]) -> str:
    control = reference.startswith("^")
    name, colon, rest = reference.lstrip("^").partition(":")
    return ("^" if control else "") + names.get(name, name) + colon + rest


def rename_references(nodes, names: dict[str, str]) -> None:
    for node in nodes:
        node.op = names.get(node.op, node.op)
        for value in node.attr.values():
            for call in _calls_in(value):
                call.name = names.get(call.name, call.name)


def program_key(meta_graph: meta_graph_pb2.MetaGraphDef, export_dir: str | Path) -> str:
    """A digest of what the version's session computes (see the module's docstring)."""
    digest = hashlib.sha256()
    parts = [canonical_graph(meta_graph.graph_def), meta_graph.saver_def, *meta_graph.asset_file_def]
    parts += [meta_graph.signature_def[key] for key in sorted(meta_graph.signature_def)]
    parts += [meta_graph.collection_def[key] for key in sorted(meta_graph.collection_def)]
    for part in parts:
        digest.update(_length_prefixed(part.SerializeToString(deterministic=True)))
    for key in sorted(meta_graph.signature_def):
        digest.update(_length_prefixed(key.encode()))
    for asset in meta_graph.asset_file_def:
        digest.update(_length_prefixed(asset.filename.encode()))
        digest.update(hashlib.sha256((Path(export_dir) / "assets" / asset.filename).read_bytes()).digest())
    return digest.hexdigest()


def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data
