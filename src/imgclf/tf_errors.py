"""TensorFlow's error messages in the op's own words: the one cleaner for the server's replies, the
client's result lines, the trainer's skipped files and the gate's verdicts.

An OpError raised by a traced function reads `Graph execution error:` + where the op was defined
(`Detected at node ... defined at (most recent call last): File ...`) + `<stack traces
unavailable>` + the kernel's message, with `{{function_node __wrapped__...}}` before it and
` [Op:...] name: ` after it. TF Serving, which runs the graph in a session, answers with the
kernel's message and the `[[{{node X}}]]` line only.
"""

from __future__ import annotations

import re

_STACK_END = "<stack traces unavailable>\n"
_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\](\s*name:\s*\S*)?\s*$")
_NODE = re.compile(r"\s*\[\[\{\{node [^]]*\]\]")
_WHERE = re.compile(r"^(Graph execution error:|Detected at node|<stack traces unavailable>)")


def tf_error_message(message: str, one_line: bool = True) -> str:
    """The kernel's message without the eager runtime's header, function name and op suffix. With
    one_line (for people) also without the node lines, on one line; without it, as TF Serving says
    it (the server's replies)."""
    if message.startswith("Graph execution error:") and _STACK_END in message:
        message = message.split(_STACK_END, 1)[1]
    message = _OP_SUFFIX.sub("", _FUNCTION_NODE.sub("", message)).strip()
    if not one_line:
        return message
    kept = [_NODE.sub("", line).strip() for line in message.splitlines() if not _WHERE.match(line.strip())]
    return " ".join(line for line in kept if line) or " ".join(message.split())
